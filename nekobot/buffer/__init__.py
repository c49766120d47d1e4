"""The outbound buffer: per-platform offline queues, TTL, rate-limited replay, SQLite.

``bot.send(...)`` to a platform whose link is down lands here
(``MessageBuffer.add_message``). When the link comes back the connection
layer calls ``MessageBuffer.mark_platform_online`` and the buffer replays
the platform's queue to it through the ``deliver`` function it was built with,
in policy order, the backlog at most ``replay_rate`` messages per second,
removing each message only after the platform acknowledged it (DESIGN.md §3
"Outbound").

Parts: :mod:`.message_buffer` (the actor and its public API), :mod:`.requests`
(the messages it accepts, and the checks of their fields), :mod:`.queue` (one
queue, policies, overflow victims), :mod:`.replay` (the replay task, the
backlog's pacing, the retry backoff), :mod:`.persistence` (the SQLite table,
group commit), :mod:`.stats` (stats and snapshots), :mod:`.reporting`
(metrics and alerts).

Bad input never reaches the actor's loop: every request checks its fields when
it is built (queue names and message types must be non-empty text that encodes
as UTF-8, a priority one of :class:`~nekobot.messages.MessagePriority`, a TTL a
positive number, content JSON), and the caller gets
:class:`~nekobot.errors.InvalidRequest` naming the field.

Queues and caps
---------------
One queue per platform, bounded by its own ``max_size`` (``[buffer].max_size``,
overridden per platform by ``[buffer].platform_max_size``). All queues together
hold at most ``global_max_size`` messages. An ``add_message`` that finds its
platform's queue full, *or* the global cap reached, drops exactly one message
**of that same platform** (or the incoming message itself) according to the
overflow strategy: one platform's flood never evicts another platform's
messages. When the global cap is reached and the platform holds nothing of its
own that could be evicted, the incoming message is dropped (reason
``"global_full"``). Keep ``sum(per-platform max_size) <= global_max_size`` if
no platform may ever be squeezed by another's flood.

Overflow strategies (the candidates are the queue's messages plus the incoming
one; the message being replayed right now is never a candidate):

- ``DROP_OLDEST``: the oldest message (first added) is dropped.
- ``DROP_NEWEST``: the incoming message is dropped (the queue keeps what it had;
  ``add_message`` still returns the key, the drop is counted).
- ``DROP_LOW_PRIORITY``: the oldest message of the lowest priority is dropped;
  the incoming one only if its priority is below every buffered message's.

Survivors, ``max_size = 3``, adding ``a`` LOW, ``b`` HIGH, ``c`` NORMAL,
``d`` LOW, ``e`` HIGH in that order (two overflows), listed in replay order:

==============  ==================  ==================  ====================
policy          DROP_OLDEST         DROP_NEWEST         DROP_LOW_PRIORITY
==============  ==================  ==================  ====================
FIFO            c, d, e             a, b, c             b, c, e
LIFO            e, d, c             c, b, a             e, c, b
PRIORITY        e, c, d             b, c, a             b, e, c
==============  ==================  ==================  ====================

(``DROP_OLDEST`` drops ``a`` then ``b``; ``DROP_NEWEST`` drops ``d`` then ``e``;
``DROP_LOW_PRIORITY`` drops ``a`` (oldest LOW) then ``d`` (the only LOW left).)
``PRIORITY`` replays the highest priority first, FIFO within one priority.

Replay and ordering
-------------------
One replay per platform at a time. It takes the policy's head, calls
``deliver``, and removes the message only after ``deliver`` returned (at-least-once:
the message keeps its ``message_key``, so a repeat after a crash between send
and removal can be recognised). One message is in flight at a time.

``replay_rate`` throttles only the **backlog**: the messages that were queued
when the platform came online (the transition to online in
:meth:`~MessageBuffer.mark_platform_online`; marking an online platform online
again changes nothing). Backlog send ``k`` (from 0) starts no earlier than
``t0 + k / replay_rate`` (Trio clock, ``t0`` = the first backlog send after
coming online); the spacing belongs to the platform, so it carries over from
an explicit :meth:`~MessageBuffer.replay_messages` to the background replay,
and there is no wait after the last backlog message. Messages **added while
the platform is marked online** (live traffic that ``bot.send`` queued behind
the backlog only to keep the order) are not rate-limited: each is sent as soon
as the one before it was acknowledged (so as fast as the platform answers;
still one at a time, in order, removed after its ack). Example: a backlog of 3
at ``replay_rate = 1`` goes out at ``t0``, ``t0 + 1``, ``t0 + 2``; 100 messages
added at ``t0 + 0.5`` all go out at ``t0 + 2`` right after the third (as fast
as the platform acks). A message queued while online stays live until the next
offline-to-online transition, where everything still queued becomes backlog.

Backpressure instead of overflow while online: an ``add_message`` that finds
the queue of an online platform full (or the global cap reached while that
queue holds something), with ``deliver`` given, *waits* for room instead of
dropping, first come first served (``overflow_wait`` seconds at most, Trio
clock; then the overflow strategy applies): the actor holds the call and
answers it when a removal from that queue made room. A queue that drains at the
platform's speed therefore slows its producers down rather than losing their
messages; the waits are counted (``waited_total``). While the platform is
offline the overflow strategy applies at once, as before; marking it offline
sends the waiting calls to their overflow decision at once.

If ``deliver`` raises, the message stays at the head and the replay stops;
while the platform is still marked online the background replay retries after
``retry_interval`` seconds (doubling, capped at 60 s:
:func:`~nekobot.buffer.replay.retry_backoff`, THE
:class:`~nekobot.core.backoff.Backoff` without jitter), and after
``max_send_attempts`` refusals of one message drops it (reason
``"send_failed"``) so it cannot block the queue forever. A refusal is any
exception other than ``ConnectionClosed`` / ``PlatformOffline``: those mean the
link failed, not the message, and are retried (with the same backoff) without
ever dropping the message. Any ``BaseException`` from ``deliver`` but
cancellation (a platform's ``KeyboardInterrupt``, ``SystemExit``) counts as a
refused send: the platform's fault, never the buffer's.

A message added while the platform is online is queued (never sent
around the queue) and starts a replay if none runs: :meth:`pending_count` is
non-zero while anything is queued or in flight, and ``bot.send`` sends directly
only when the platform is online *and* ``pending_count`` is 0 — so a message
added during a replay goes behind the queue in policy order (behind everything
for FIFO; behind equal or higher priorities for PRIORITY; LIFO replays the
newest first by definition).

TTL and clocks
--------------
Every message has a TTL in seconds: ``None`` takes ``default_ttl``,
``math.inf`` never expires, zero/negative/NaN (or an int too large for a float)
raise :class:`~nekobot.errors.InvalidRequest` (a ``ValueError``). In memory the
deadline is on the **Trio clock** (``trio.current_time() + ttl``); an expired
message is removed at its deadline, counted as expired and never sent. The
database stores a **wall-clock** deadline (``time.time() + ttl``) as well, so
after a restart the remaining TTL is ``expires_wall - time.time()`` (messages
whose deadline passed while the bot was down are expired at load and counted).

Monitoring
----------
With a monitor, every batch of the actor reports what changed to
``monitor.record_metric`` (only for the queues the batch changed; counters as
deltas of :class:`PlatformBufferStats`, so the two always agree):
``nekobot_buffer_dropped_total{platform_id,reason}`` (every drop, any reason),
``nekobot_buffer_expired_total{platform_id}``,
``nekobot_buffer_replayed_total{platform_id}``,
``nekobot_buffer_added_total{platform_id}``,
``nekobot_buffer_restored_total{platform_id}``,
``nekobot_buffer_full_waits_total{platform_id}`` and the gauge
``nekobot_buffer_size{platform_id}``. The first overflow drop of a platform
(reasons ``drop_oldest``, ``drop_newest``, ``drop_low_priority``,
``global_full``) opens the WARNING alert ``buffer:overflow:<platform_id>``
(``metric_name="nekobot_buffer_dropped_total"``); further overflow drops update
it with the running count since it opened; it is cleared when that platform's
queue has drained to empty. ``send_failed`` and ``corrupt`` drops are logged at
WARNING/ERROR and counted, without that alert. The monitor never takes the
buffer down: a failing ``record_metric`` is logged once and ignored.

Durability
----------
With a :class:`~nekobot.storage.Store` the queues live in the table
``buffer_messages`` (SQLite, WAL). The actor drains its mailbox in batches and
writes each batch's inserts and deletes in one transaction (group commit);
``add_message`` returns only after the transaction holding its message
committed, so every message whose ``add_message`` returned survives ``kill -9``.
At start each platform's queue is loaded back in its original order. A corrupt
database file is moved aside by the store; the buffer logs it and raises the
alert ``storage:corrupt``, and starts empty. The fsync level is the store's
``PRAGMA synchronous`` (``NORMAL`` by default: a commit survives a process
crash, not a power loss). If a commit fails (disk full, I/O error), the
``add_message`` calls of that batch raise the ``sqlite3.Error`` and their
messages are not buffered; removals in that batch stay in the file, so those
messages may be replayed again after a restart (at-least-once), and the alert
``buffer:store_error`` is raised.
"""
