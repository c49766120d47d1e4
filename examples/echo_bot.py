"""Embed NekoBot in your own Trio program.

Run it, then point a OneBot v11 implementation's reverse WebSocket at
ws://127.0.0.1:6701/onebot/v11/ws. Every message that says "hello" gets
"hello, <nickname>!" back where it was said, through the account that
received it (several accounts may connect, each with its own X-Self-ID).

    python examples/echo_bot.py
"""

from __future__ import annotations

import trio

import nekobot
from nekobot.plugins.echo import plain_text, reply_target

CONFIG = {
    "bot": {"name": "echo-example", "data_dir": "data-echo-example"},
    "platforms": {
        "qq": {
            "type": "onebot_v11",
            "mode": "reverse",
            "host": "127.0.0.1",
            "port": 6701,
            "path": "/onebot/v11/ws",
        }
    },
}


async def main() -> None:
    async with nekobot.open_nekobot(CONFIG) as bot:

        async def on_message(message: nekobot.Message) -> None:
            event = message.content
            target = reply_target(event)
            if target is None or plain_text(event.get("message")).strip() != "hello":
                return
            # params carry the event's "self_id": with several QQ accounts
            # connected, the reply goes out through the one that was addressed.
            action, params = target
            name = (event.get("sender") or {}).get("nickname", "friend")
            receipt = await bot.send(
                message.platform_id, action, {**params, "message": f"hello, {name}!"}
            )
            print("answered", "(buffered: platform offline)" if receipt.buffered else "")

        bot.message_router.register_handler("message", on_message)
        print("listening on ws://127.0.0.1:6701/onebot/v11/ws; Ctrl+C to stop")
        await trio.sleep_forever()


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
