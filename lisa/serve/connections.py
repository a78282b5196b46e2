"""Connection-level deadlines for uvicorn: a client must send each request's headers in time.

uvicorn closes a connection idle between requests after ``timeout_keep_alive``, but a client that
opens a connection and then sends its request line and headers a byte at a time holds it forever
(data keeps arriving, so the keep-alive timer never fires). The protocol below closes a connection
whose next request has not got its headers complete ``header_timeout_s`` after the connection opened
or the previous answer ended. A body that stalls is the ASGI middleware's (408, see
:mod:`lisa.serve.middleware`).
"""

from __future__ import annotations


def with_header_deadline(base: type, header_timeout_s: float) -> type:
    """A subclass of uvicorn's HTTP protocol class ``base`` (h11 or httptools) with the deadline."""

    class HeaderDeadline(base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            # the request being answered (None on a new connection); a new one replaces it once its
            # headers are complete
            self.loop.call_later(header_timeout_s, self._header_deadline, self.cycle)

        def _header_deadline(self, previous) -> None:
            waiting = self.cycle is previous or self.cycle is None
            if waiting and self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    HeaderDeadline.__name__ = HeaderDeadline.__qualname__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline


def uvicorn_protocol(header_timeout_s: float) -> type:
    """uvicorn's default HTTP/1.1 protocol class with the header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return with_header_deadline(AutoHTTPProtocol, header_timeout_s)
