"""The Monte Carlo chain split into steps: ``evgen`` (HepMC3), ``simul`` and ``reco`` (ROOT).

Each step is its own payload so that a campaign can run, size and retry them
separately, and so that simul can take events from any generator's HepMC3 file
and reco any simulated ``events`` tree. Modules are imported by the registry on
demand (``parsl_es.payloads.mc.evgen:EvgenPayload``): this package imports none.
"""
