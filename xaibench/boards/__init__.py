"""Leaderboards: pure DataFrame -> DataFrame boards, and renderers (rich, Markdown, CSV)."""
