//! The MCP server for AI agents (tools over rmcp).
