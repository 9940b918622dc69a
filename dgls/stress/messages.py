"""Generated hostile LSP traffic for the fuzz section: one seeded generator, many kinds of wrong.

Each message is framed correctly (a wrong Content-Length only desynchronises the stream, which
no server can recover from and no editor sends); everything inside the frame may be wrong. A
message counts as a request the server must answer when its body is a JSON object with a string
`method` and an integer or string `id`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

URI_ROOT = "file:///tmp/dgls-stress/fuzz"
SAMPLE = ("import os\n\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n\n\n"
          "class Box:\n    def __init__(self, size):\n        self.size = size\n\n    def area(self):\n"
          "        return self.size * \n\n\nprint(Box(3).area())\n")
FEATURES = ("textDocument/inlineCompletion", "textDocument/completion", "textDocument/codeAction",
            "workspace/executeCommand")
COMMANDS = ("dgls.infillSelection", "dgls.rewriteSelection", "dgls.completeHere", "dgls.nope", 7, None)
ODD_NUMBERS = (-1, -2**31, 2**31, 2**63, 10**30, 0.5, float("nan"), True, None, "3", [], {})


@dataclass
class Message:
    kind: str
    body: bytes
    msg_id: Any = None  # set when the server owes an answer


class Fuzzer:
    """Yields `Message`s; keeps a few documents open so well-formed requests reach the engine."""

    def __init__(self, seed: int, next_id: Callable[[], int], huge_chars: int = 2_000_000) -> None:
        self.rng = random.Random(seed)
        self.next_id = next_id
        self.huge_chars = huge_chars
        self.open: dict[str, int] = {}
        self.closed: list[str] = []
        self._uris = 0
        kinds = {self.valid_request: 20, self.bad_position: 12, self.wrong_types: 12, self.malformed: 10,
                 self.bad_change: 10, self.lifecycle: 8, self.unknown_method: 6, self.closed_document: 6,
                 self.odd_text: 6, self.odd_ids: 5, self.settings: 3, self.huge: 0.4}
        self._kinds, self._weights = list(kinds), list(kinds.values())

    def messages(self, count: int) -> Iterator[Message]:
        for _ in range(count):
            yield self.rng.choices(self._kinds, self._weights)[0]()

    # -- helpers ------------------------------------------------------------------------------------
    def _uri(self) -> str:
        self._uris += 1
        return f"{URI_ROOT}/{self._uris}.py"

    def _any_uri(self) -> str:
        if self.open and self.rng.random() < 0.8:
            return self.rng.choice(list(self.open))
        return self._uri()

    def _position(self, sane: bool = True) -> Any:
        r = self.rng
        if sane:
            return {"line": r.randrange(0, 20), "character": r.randrange(0, 40)}
        return {"line": r.choice(ODD_NUMBERS + (r.randrange(0, 20),)), "character": r.choice(ODD_NUMBERS + (5,))}

    def _request(self, kind: str, method: Any, params: Any, msg_id: Any = None) -> Message:
        msg_id = self.next_id() if msg_id is None else msg_id
        return Message(kind, _dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}), msg_id)

    def _notice(self, kind: str, method: str, params: Any) -> Message:
        return Message(kind, _dumps({"jsonrpc": "2.0", "method": method, "params": params}))

    def _feature_params(self, method: str, uri: str, position: Any) -> Any:
        doc = {"uri": uri}
        if method == "textDocument/inlineCompletion":
            return {"textDocument": doc, "position": position, "context": {"triggerKind": self.rng.choice([1, 1, 2])}}
        if method == "textDocument/completion":
            return {"textDocument": doc, "position": position, "context": {"triggerKind": self.rng.choice([1, 2, 3]),
                                                                            "triggerCharacter": "("}}
        rng = {"start": position, "end": self._position()}
        if method == "textDocument/codeAction":
            return {"textDocument": doc, "range": rng, "context": {"diagnostics": []}}
        command = self.rng.choice(COMMANDS)
        return {"command": command, "arguments": [{"textDocument": {"uri": uri, "version": self.open.get(uri)},
                                                   "range": rng}]}

    # -- kinds ------------------------------------------------------------------------------------
    def valid_request(self) -> Message:
        method = self.rng.choice(FEATURES)
        return self._request("valid", method, self._feature_params(method, self._any_uri(), self._position()))

    def bad_position(self) -> Message:
        method = self.rng.choice(FEATURES)
        return self._request("bad-position", method,
                             self._feature_params(method, self._any_uri(), self._position(sane=False)))

    def wrong_types(self) -> Message:
        r = self.rng
        method = r.choice(FEATURES)
        params = self._feature_params(method, self._any_uri(), self._position())
        mutation = r.randrange(5)
        if mutation == 0:
            params = r.choice([None, [], "params", 42, [params]])
        elif mutation == 1:
            params["textDocument"] = r.choice([None, 5, "uri", [], {"url": "x"}])
        elif mutation == 2:
            params.pop(r.choice(list(params)))
        elif mutation == 3:
            params[r.choice(list(params))] = r.choice(ODD_NUMBERS)
        else:
            params["context"] = {"triggerKind": r.choice(ODD_NUMBERS)}
        return self._request("wrong-types", method, params)

    def malformed(self) -> Message:
        r = self.rng
        choice = r.randrange(8)
        if choice == 0:
            return Message("malformed", b'{"jsonrpc": "2.0", "id": 1, "method": ')
        if choice == 1:
            return Message("malformed", bytes(r.randrange(256) for _ in range(r.randrange(1, 300))))
        if choice == 2:
            return Message("malformed", _dumps([{"jsonrpc": "2.0", "id": self.next_id(), "method": "dgls/nothing"}]))
        if choice == 3:
            return Message("malformed", r.choice([b"null", b"42", b'"text"', b"[]", b"{}", b""]))
        if choice == 4:
            return Message("malformed", _dumps({"jsonrpc": "2.0", "method": r.choice(ODD_NUMBERS), "id": "m"}))
        if choice == 5:  # a reply to a request the server never sent
            return Message("malformed", _dumps({"jsonrpc": "2.0", "id": r.randrange(10**6), "result": {"x": 1}}))
        if choice == 6:  # a request in another JSON-RPC version still deserves an error
            msg_id = self.next_id()
            return Message("malformed", _dumps({"jsonrpc": "1.0", "id": msg_id, "method": "textDocument/completion",
                                                "params": self._feature_params("textDocument/completion", self._any_uri(),
                                                                               self._position())}),
                           msg_id)
        return Message("malformed", b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"a": "\xff\xfe"}}')

    def bad_change(self) -> Message:
        r = self.rng
        uri = self._any_uri()
        version = r.choice([self.open.get(uri, 1) + 1, self.open.get(uri, 1) - 5, -1, 2**40, "7", None])
        start, end = self._position(sane=r.random() < 0.6), self._position(sane=r.random() < 0.6)
        change = r.choice([{"range": {"start": start, "end": end}, "text": r.choice(["x", "", "\n", "é😀", "(" * 50])},
                           {"text": r.choice([SAMPLE, "", 5])}, {"range": None, "text": "y"}, {}])
        if isinstance(version, int) and uri in self.open and version > self.open[uri]:
            self.open[uri] = version
        return self._notice("bad-change", "textDocument/didChange",
                            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]})

    def lifecycle(self) -> Message:
        r = self.rng
        if self.open and (len(self.open) > 6 or r.random() < 0.3):
            uri = r.choice(list(self.open))
            del self.open[uri]
            self.closed.append(uri)
            return self._notice("lifecycle", "textDocument/didClose", {"textDocument": {"uri": uri}})
        uri = self._uri()
        self.open[uri] = 1
        return self._notice("lifecycle", "textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": r.choice(["python", "rust", "nonsense", ""]), "version": 1, "text": SAMPLE}})

    def unknown_method(self) -> Message:
        r = self.rng
        method = r.choice(["dgls/nothing", "textDocument/hover", "$/unknown", "workspace/symbol", "x" * 500, ""])
        if r.random() < 0.3:
            return self._notice("unknown-method", method, {"q": 1})
        return self._request("unknown-method", method, {"textDocument": {"uri": self._any_uri()}})

    def closed_document(self) -> Message:
        uri = self.rng.choice(self.closed) if self.closed else self._uri()
        method = self.rng.choice(FEATURES)
        return self._request("closed-document", method, self._feature_params(method, uri, self._position()))

    def odd_text(self) -> Message:
        r = self.rng
        uri = self._uri()
        self.open[uri] = 1
        text = r.choice(["\ud800 lone = '\udfff'\n", "\x00\x01\x02 binary\x7f\n" * 50, "a\r\nb\rc\n" * 20,
                         "".join(chr(r.randrange(0x20, 0x2FFFF)) for _ in range(500)), "é" * 3000])
        return self._notice("odd-text", "textDocument/didOpen",
                            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}})

    def odd_ids(self) -> Message:
        msg_id = self.rng.choice([f"s-{self.next_id()}", -self.next_id(), 2**53 + self.next_id()])
        method = self.rng.choice(FEATURES)
        return self._request("odd-ids", method, self._feature_params(method, self._any_uri(), self._position()), msg_id)

    def settings(self) -> Message:
        r = self.rng
        section = r.choice([{"steps": r.choice([0, 2, -5, "2", 10**9])}, {"maxSpanTokens": r.choice([1, 8, 2**40, None])},
                            {"debounceMs": r.choice([0, -1, 1e12, "x"])}, {"logLevel": r.choice(["debug", 5, "loud"])},
                            {"bogus": 1}, "not-a-dict"])
        return self._notice("settings", "workspace/didChangeConfiguration", {"settings": {"dgls": section}})

    def huge(self) -> Message:
        uri = self._uri()
        self.open[uri] = 1
        body = (SAMPLE * (self.huge_chars // len(SAMPLE) + 1))[: self.huge_chars]
        return self._notice("huge", "textDocument/didOpen",
                            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": body}})


def _dumps(payload: Any) -> bytes:
    """JSON as a careless client writes it: lone surrogates escaped, NaN allowed."""
    return json.dumps(payload).encode()
