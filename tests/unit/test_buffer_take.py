"""Buffer.take's deadline covers taking the lock too, and a cancelled take leaves the lock free.

The actor's own class runs on a plain asyncio loop here (no Ray calls are made on these paths):
a lock held too long by another call is something a live actor cannot be made to do on demand.
"""

from __future__ import annotations

import asyncio

from actors.buffer import Buffer

BufferClass = Buffer.__ray_metadata__.modified_class


def test_a_take_whose_deadline_passes_while_the_lock_is_held_returns_empty(tmp_path):
    async def scenario():
        buf = BufferClass(str(tmp_path), capacity=8)
        await buf._cond.acquire()  # another call holds the lock past the take's deadline
        got = await asyncio.wait_for(buf.take("c", 4, 0.05), 5)
        buf._cond.release()
        return got, buf._cond.locked()

    got, locked = asyncio.run(scenario())
    assert got == {"lease": None, "items": [], "done": False} and not locked


def test_a_cancelled_take_leaves_the_lock_free_for_the_next_call(tmp_path):
    async def scenario():
        buf = BufferClass(str(tmp_path), capacity=8)
        waiting = asyncio.ensure_future(buf.take("c", 4, 60))
        await asyncio.sleep(0.05)  # inside its wait, on an empty open buffer
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        locked = buf._cond.locked()
        await buf.close()
        return locked, await asyncio.wait_for(buf.take("c", 4, 60), 5)

    locked, got = asyncio.run(scenario())
    assert not locked and got["done"] and got["items"] == []
