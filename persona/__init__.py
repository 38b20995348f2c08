"""Persona-core: what a persona is (the PersonaPack, validated against
schemas/persona_pack.schema.json), how one is built from photos, a clip and voice refs (the
builder pipeline), where its blobs live (content-addressed stores), and the runtime hooks the
driver consults (anchor selection, anchor refresh, the behaviour clamp).

It sits just above ``protocol`` and below ``registry`` (the service that stores and serves
packs) and ``actors`` (the driver renders from a pack)."""
