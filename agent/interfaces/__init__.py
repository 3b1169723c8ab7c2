"""Where people and other programs meet the analyst: the command line, the web workspace, the MCP server and
the Python API. Each interface only translates; the graph, its tools and the settings live in
:mod:`rsrag.agent`."""

__all__: list[str] = []  # the interfaces are their modules (cli, web, mcp, api); rsrag.agent re-exports the API
