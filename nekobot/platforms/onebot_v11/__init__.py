"""OneBot v11 over WebSocket (QQ through NapCat, Lagrange, go-cqhttp …): reverse
(we listen) and forward (we dial).

Protocol rules followed (botuniverse/onebot-11):

* ``communication/ws-reverse.md``: the implementation connects to us with
  ``X-Self-ID`` (the bot account) and ``X-Client-Role`` (``Universal``, or
  ``API`` / ``Event`` for the two separate connections). A ``Universal``
  connection carries events and API calls; ``Event`` only events; ``API`` only
  calls and their responses.
* ``communication/ws.md``: forward WebSocket, we dial the implementation (its
  ``/`` is the universal endpoint); events arrive as JSON text frames; actions
  are ``{"action", "params", "echo"}`` and the response carries the same
  ``echo`` back.
* ``communication/authorization.md``: the token as ``Authorization: Bearer``
  (or ``Token``) or the ``access_token`` query parameter; a missing or wrong
  token is answered with HTTP 401 (and 401/403 count alike when we dial).
* ``event/meta.md``: ``heartbeat`` events carry ``interval`` in milliseconds;
  they feed the link's liveness (arrival time on the Trio clock, never the
  frame's ``time``). ``lifecycle`` ``connect`` is recorded.

No data from a peer can stop the platform: an inbound frame that is oversized
(``max_frame_size`` bytes), not JSON, not Unicode text (a lone surrogate),
nested deeper than ``frames.MAX_NESTING``, not an object, or neither an event
(a string ``post_type``) nor an action response (``echo``, ``status`` or
``retcode``) is counted and dropped; the link stays open. Each event becomes
``make_message(post_type, event, dedup_key=(self_id, message_id))`` and is
emitted to the router. JSON numbers stay Python ints, so signed and unsigned
int32 ``message_id`` values stay exact.

A second connection with the same ``X-Self-ID`` (and a conflicting role)
replaces the first: the new one is live at once, the old one is closed, and
bookkeeping is keyed by a connection *generation*, so the old one's cleanup
never removes the new one. Several bot accounts may connect to one
reverse-mode platform; an outbound message names its account with a
``self_id`` key in its content (removed before the action is sent); a message
for an account with no live API connection raises :class:`AccountOffline`
(the bot buffers it) and is never sent through another account.

Parts: :mod:`.config` (the ``[platforms.<id>]`` keys), :mod:`.websocket`
(handshakes), :mod:`.frames` (reading and writing frames), :mod:`.connections`
(connections, accounts, pending calls), :mod:`.platform` (the actor).
"""

from .config import OneBotV11Config as OneBotV11Config
from .connections import AccountOffline as AccountOffline
from .platform import OneBotV11Platform as OneBotV11Platform
from .websocket import open_client_websocket as open_client_websocket
