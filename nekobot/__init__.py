"""NekoBot: keeps a chat bot's platform connections alive, as supervised Trio actors."""

from .actor import Actor as Actor
from .actor import ActorRef as ActorRef
from .app import NekoBot as NekoBot
from .app import RootActorCrashed as RootActorCrashed
from .app import open_nekobot as open_nekobot
from .config.schema import NekoBotConfig as NekoBotConfig
from .config.schema import load_config as load_config
from .config.schema import parse_config as parse_config
from .connection_manager import ConnectionConfig as ConnectionConfig
from .errors import ActorStopped as ActorStopped
from .errors import CallTimeout as CallTimeout
from .errors import ConfigError as ConfigError
from .errors import ConnectionClosed as ConnectionClosed
from .errors import NekoBotError as NekoBotError
from .errors import PlatformExists as PlatformExists
from .errors import PlatformNotFound as PlatformNotFound
from .message_router import Message as Message
from .message_router import MessagePriority as MessagePriority
from .platforms.base import OutboundMessage as OutboundMessage
from .platforms.base import PlatformActor as PlatformActor
from .platforms.base import PlatformContext as PlatformContext
from .platforms.base import SendReceipt as SendReceipt

__version__ = "0.1.0"
