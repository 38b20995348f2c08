"""Training of the learned parts that ship with Personas (client tooling: the runtime never imports it)."""
