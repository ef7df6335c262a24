"""Connection-level limits uvicorn does not have, on its h11 protocol: a deadline for a complete
request head (a client that sends half its headers, or nothing, does not hold a connection forever),
a cap on open connections, and JSON bodies for the errors answered before any route runs."""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REASONS = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}


def raw_json_response(status: int, message: str, code: str | None = None) -> bytes:
    """A complete HTTP/1.1 response with OpenAI's error body, for writing straight to a transport."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                                 "param": None, "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def make_protocol(header_timeout_s: float, max_connections: int) -> type:
    class Protocol(H11Protocol):
        _timer = None
        _got_bytes = False
        _over = False  # opened beyond max_connections

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._over = len(self.connections) > max_connections
            self._arm()

        def _arm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._got_bytes = False
            self._timer = self.loop.call_later(header_timeout_s, self._head_deadline)

        def _head_deadline(self) -> None:
            self._timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # a request head arrived: its body and response have their own bounds
            if self._got_bytes:  # a partial head: say why before closing
                self.transport.write(raw_json_response(408, f"incomplete request head after {header_timeout_s:g} s",
                                                       "request_timeout"))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            self._got_bytes = True
            if self._over:  # answered once its request has been read (closing on unread data resets it)
                if not self.transport.is_closing():
                    self.transport.write(raw_json_response(503, f"the server holds its limit of {max_connections} "
                                                                "open connections; retry shortly", "too_many_connections"))
                    self.transport.close()
                return
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:  # a malformed request line or header, e.g. Content-Length: -1
            self.transport.write(raw_json_response(400, f"malformed HTTP request: {msg}", "bad_http"))
            self.transport.close()

    return Protocol
