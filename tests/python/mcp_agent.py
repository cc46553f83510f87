"""An AI assistant's side of cordon's MCP server, with the official `mcp` Python SDK.

Usage: mcp_agent.py URL TOKEN CASE_ID ALERT_ID
Lists cases, reads the case, proposes isolate_host with citations and adds a finding over
streamable HTTP; prints one JSON object with what it saw (the test checks it).
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


def payload(result):
    if result.structuredContent is not None:
        return result.structuredContent
    return json.loads(result.content[0].text)


async def main(url, token, case_id, alert_id):
    headers = {"Authorization": f"Bearer {token}"}
    async with streamablehttp_client(url, headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            cases = await session.call_tool("list_cases", {})
            case = await session.call_tool("get_case", {"case_id": case_id})
            proposed = await session.call_tool(
                "propose_action",
                {
                    "case_id": case_id,
                    "action": "isolate_host",
                    "target": "ws-042",
                    "connector": "crowdstrike",
                    "hypothesis": "encoded PowerShell from WINWORD: a macro dropper",
                    "confidence": 85,
                    "citations": [f"alert:{alert_id}", "fact:host:ws-042"],
                },
            )
            finding = await session.call_tool(
                "add_finding",
                {
                    "case_id": case_id,
                    "kind": "attack_mapping",
                    "text": "T1059.001 via an Office macro",
                    "techniques": ["T1059.001"],
                    "confidence": 70,
                    "citations": [f"alert:{alert_id}"],
                },
            )
            refused = await session.call_tool(
                "propose_action",
                {
                    "case_id": case_id,
                    "action": "isolate_host",
                    "target": "ws-042",
                    "connector": "crowdstrike",
                    "hypothesis": "no evidence",
                    "confidence": 10,
                    "citations": [],
                },
            )
            print(
                json.dumps(
                    {
                        "server": init.serverInfo.name,
                        "tools": sorted(t.name for t in tools.tools),
                        "cases": [c["case_id"] for c in payload(cases)["cases"]],
                        "case_alerts": [a["alert_id"] for a in payload(case)["alerts"]],
                        "proposed": payload(proposed),
                        "finding": payload(finding),
                        "refused": {
                            "is_error": refused.isError,
                            "text": refused.content[0].text,
                        },
                    }
                )
            )


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
