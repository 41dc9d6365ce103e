"""Live2D renderer, lip-sync and overlay window (see issue: Live2D character)."""
