"""The companion WebSocket (seed 001, NyaDeskPet)."""
