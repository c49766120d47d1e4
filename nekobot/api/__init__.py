"""The operators' HTTP API (Starlette on Hypercorn's trio worker)."""
