"""The ``physics`` payload: Pythia 8 generation and a numpy detector simulation."""

from parsl_es.payloads.physics.payload import PhysicsParams, PhysicsPayload

__all__ = ["PhysicsParams", "PhysicsPayload"]
