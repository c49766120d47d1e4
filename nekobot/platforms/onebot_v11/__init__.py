"""OneBot v11 (QQ through NapCat, Lagrange, go-cqhttp …): reverse and forward WebSocket."""

from .platform import AccountOffline as AccountOffline
from .platform import OneBotV11Config as OneBotV11Config
from .platform import OneBotV11Platform as OneBotV11Platform
from .platform import open_client_websocket as open_client_websocket
