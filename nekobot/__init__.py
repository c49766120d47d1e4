"""NekoBot: keeps a chat bot's platform connections alive, as supervised Trio actors.

The public API, re-exported once here (``from nekobot.x import Y as Y`` so type
checkers see the re-export). Start with :func:`open_nekobot`.
"""

from .app import NekoBot as NekoBot
from .app import RootActorCrashed as RootActorCrashed
from .app import open_nekobot as open_nekobot
from .buffer.message_buffer import BufferedMessage as BufferedMessage
from .buffer.message_buffer import BufferPolicy as BufferPolicy
from .buffer.message_buffer import BufferStats as BufferStats
from .buffer.message_buffer import MessageBuffer as MessageBuffer
from .buffer.message_buffer import OverflowStrategy as OverflowStrategy
from .config.loader import load_config as load_config
from .config.loader import parse_config as parse_config
from .config.schema import NekoBotConfig as NekoBotConfig
from .config.schema import PlatformConfig as PlatformConfig
from .config.schema import config_to_dict as config_to_dict
from .config.schema import dumps_config as dumps_config
from .config.versions import ConfigChangeType as ConfigChangeType
from .config.versions import ConfigDiff as ConfigDiff
from .config.versions import ConfigVersion as ConfigVersion
from .config.versions import ConfigVersionManager as ConfigVersionManager
from .core.actor import Actor as Actor
from .core.actor import ActorRef as ActorRef
from .core.actor import MailboxStatistics as MailboxStatistics
from .core.backoff import Backoff as Backoff
from .core.supervisor import ChildSpec as ChildSpec
from .core.supervisor import ChildStartError as ChildStartError
from .core.supervisor import ChildStatus as ChildStatus
from .core.supervisor import RestartIntensityExceeded as RestartIntensityExceeded
from .core.supervisor import RestartType as RestartType
from .core.supervisor import Strategy as Strategy
from .core.supervisor import Supervisor as Supervisor
from .errors import ActorStopped as ActorStopped
from .errors import AlertNotFound as AlertNotFound
from .errors import CallTimeout as CallTimeout
from .errors import ConfigError as ConfigError
from .errors import Conflict as Conflict
from .errors import ConnectionClosed as ConnectionClosed
from .errors import FrameTooLarge as FrameTooLarge
from .errors import InvalidRequest as InvalidRequest
from .errors import MailboxFull as MailboxFull
from .errors import NekoBotError as NekoBotError
from .errors import OneBotActionFailed as OneBotActionFailed
from .errors import PlatformExists as PlatformExists
from .errors import PlatformNotFound as PlatformNotFound
from .errors import PlatformOffline as PlatformOffline
from .errors import RevisionConflict as RevisionConflict
from .errors import VersionCorrupted as VersionCorrupted
from .errors import VersionNotFound as VersionNotFound
from .faults.fault_isolation import BreakerState as BreakerState
from .faults.fault_isolation import DegradationLevel as DegradationLevel
from .faults.fault_isolation import FaultIsolation as FaultIsolation
from .faults.fault_isolation import FaultRecord as FaultRecord
from .faults.fault_isolation import IsolationStatus as IsolationStatus
from .faults.fault_isolation import IsolationStrategy as IsolationStrategy
from .messages import Message as Message
from .messages import MessagePriority as MessagePriority
from .messages import OutboundMessage as OutboundMessage
from .messages import SendReceipt as SendReceipt
from .monitor.status_monitor import Alert as Alert
from .monitor.status_monitor import AlertLevel as AlertLevel
from .monitor.status_monitor import MetricType as MetricType
from .monitor.status_monitor import MonitorStatus as MonitorStatus
from .monitor.status_monitor import PlatformStatus as PlatformStatus
from .monitor.status_monitor import StatusMonitor as StatusMonitor
from .platforms.base import PlatformActor as PlatformActor
from .platforms.base import PlatformContext as PlatformContext
from .platforms.base import load_platform_class as load_platform_class
from .platforms.connection_manager import ConnectionConfig as ConnectionConfig
from .platforms.connection_manager import ConnectionManager as ConnectionManager
from .platforms.connection_manager import ConnectionStats as ConnectionStats
from .platforms.connection_manager import ConnectionStatus as ConnectionStatus
from .platforms.onebot_v11 import OneBotV11Config as OneBotV11Config
from .platforms.onebot_v11 import OneBotV11Platform as OneBotV11Platform
from .routing.message_router import DeadLetter as DeadLetter
from .routing.message_router import MessageRouter as MessageRouter
from .routing.message_router import RouterStats as RouterStats
from .runtime.runtime_manager import PlatformDisabled as PlatformDisabled
from .runtime.runtime_manager import PlatformLifecycleStatus as PlatformLifecycleStatus
from .runtime.runtime_manager import PlatformStartError as PlatformStartError
from .runtime.runtime_manager import PlatformState as PlatformState
from .runtime.runtime_manager import RuntimeManager as RuntimeManager
from .storage import Store as Store

__version__ = "0.1.0"
