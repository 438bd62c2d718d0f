"""The event-service engine: one loop, and the policies around it."""
