"""A real MCP client (the official Python SDK, `mcp` on PyPI) driven line by line by the Rust tests.

usage: mcp_client.py URL MODE
  MODE  auto        the SDK default: probe server/discover, speak the current protocol
        legacy      the initialize handshake with the newest handshake-era version
        2024-11-05  the initialize handshake offering only 2024-11-05 (an old client)

Reads one JSON command per line on stdin, writes one JSON line per command on stdout:
  {"op": "list_tools"}                      -> {"tools": [{"name", "description", "inputSchema"}...]}
  {"op": "call", "tool": T, "args": {...}}  -> {"is_error": bool, "text": str, "structured": obj|null}
After connecting it first prints {"connected": true, "protocol_version": V, "server_name": N}.
With MCP_BEARER_TOKEN set, every HTTP request carries `Authorization: Bearer <token>`.
Any failure prints {"exception": "..."} for that command; the process keeps going.
"""

import json
import os
import sys

import anyio
import mcp.client.session as session_mod
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(url: str, mode: str) -> None:
    if mode == "2024-11-05":
        # The SDK offers its newest handshake version; an old client offers this one.
        session_mod.LATEST_HANDSHAKE_VERSION = "2024-11-05"
        mode = "legacy"
    server = url
    token = os.environ.get("MCP_BEARER_TOKEN")
    if token:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        server = streamable_http_client(url, http_client=http)
    async with Client(server, mode=mode, read_timeout_seconds=120, cache=None) as client:
        info = client.server_info
        emit({"connected": True, "protocol_version": client.protocol_version,
              "server_name": info.name if info is not None else None})
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            try:
                if cmd["op"] == "list_tools":
                    result = await client.list_tools()
                    emit({"tools": [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in result.tools]})
                elif cmd["op"] == "call":
                    result = await client.call_tool(cmd["tool"], cmd.get("args", {}))
                    text = "".join(getattr(c, "text", "") for c in result.content)
                    emit({"is_error": bool(result.is_error), "text": text, "structured": result.structured_content})
                else:
                    emit({"exception": f"unknown op {cmd['op']!r}"})
            except Exception as e:  # reported to the test, which decides
                emit({"exception": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
