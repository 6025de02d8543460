"""camsig's asyncio client: `async with camsig.Client(base_url, token=...) as c`."""

from .client import ApiError, Client, Event

__all__ = ["ApiError", "Client", "Event"]
