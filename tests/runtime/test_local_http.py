from __future__ import annotations

import socket

import pytest

from xraycnn.errors import XrayCnnError
from xraycnn.runtime.local_http import check_bindable, free_port


def test_a_taken_port_is_named_before_anything_serves() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(XrayCnnError, match=f"the model server cannot listen on 127.0.0.1:{port}: .*another --port"):
            check_bindable("127.0.0.1", port, "the model server")
    check_bindable("127.0.0.1", free_port(), "the model server")


def test_an_address_not_of_this_machine_is_named() -> None:
    with pytest.raises(XrayCnnError, match=r"cannot listen on 192\.0\.2\.1"):
        check_bindable("192.0.2.1", free_port(), "the model server")  # TEST-NET-1: never a local address
