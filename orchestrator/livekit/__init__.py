"""The LiveKit adapter: the room-service seam, the livekit-api client, room metadata (ownership stamps)."""
