"""pygls' LSP protocol with dgls' fixes (malformed params, other JSON-RPC versions, one document store,
per-connection exit)."""

from __future__ import annotations

from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method


class _BadRequest:
    """A request whose params did not match the LSP schema: answered with InvalidParams."""

    def __init__(self, msg_id: Any, error: JsonRpcException) -> None:
        self.id, self.error = msg_id, error


class DglsProtocol(LanguageServerProtocol):
    """pygls' protocol with these changes: malformed requests get an InvalidParams reply and
    requests in another JSON-RPC version an InvalidRequest reply (pygls drops both unanswered),
    documents live only in dgls.documents (no second copy of a 20 MB file in pygls' workspace),
    and `exit` on a daemon connection closes only that connection."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "method" in data and isinstance(data.get("id"), (int, str)):
                return _BadRequest(data["id"], JsonRpcInvalidParams(f"invalid params for {data['method']}: {exc}"))
            raise

    def handle_message(self, message: Any) -> None:
        if isinstance(message, _BadRequest):
            self._send_response(message.id, error=message.error.to_response_error())
            return
        msg_id, version = getattr(message, "id", None), getattr(message, "jsonrpc", None)
        if version != self.VERSION and isinstance(msg_id, (int, str)) and hasattr(message, "method"):
            # pygls drops these unanswered; the client would wait for ever
            error = JsonRpcInvalidRequest(f"unsupported JSON-RPC version {version!r}; dgls speaks 2.0")
            self._send_response(msg_id, error=error.to_response_error())
            return
        super().handle_message(message)

    def _user(self, method: str, params: Any) -> Any:
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    @lsp_method(lsp.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: lsp.DidOpenTextDocumentParams) -> Any:
        yield from self._user(lsp.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: lsp.DidChangeTextDocumentParams) -> Any:
        yield from self._user(lsp.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: lsp.DidCloseTextDocumentParams) -> Any:
        yield from self._user(lsp.TEXT_DOCUMENT_DID_CLOSE, params)

    @lsp_method(lsp.EXIT)
    def lsp_exit(self, *args: Any) -> Any:
        server: Any = self._server
        if server.on_exit is None:
            yield from super().lsp_exit(*args)
            return
        yield from self._user(lsp.EXIT, None)
        server.on_exit()
