"""A client no one here wrote: PyPI's openfeature-sdk with openfeature-provider-ofrep,
unmodified, against the sidecar's OFREP endpoints."""

import time

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason


def test_openfeature_evaluates_a_boolean_and_an_integer_and_sees_a_change(
    stack, namespace, make_sidecar
):
    stack.set(namespace, "feature.dark_mode", True)
    stack.set(namespace, "limits.max_items", 20)
    sidecar = make_sidecar(namespace)
    api.set_provider(OFREPProvider(base_url=sidecar.url))
    client = api.get_client()
    assert client.get_boolean_value("feature.dark_mode", False) is True
    details = client.get_integer_details("limits.max_items", 0)
    assert (details.value, details.reason, details.variant) == (20, Reason.STATIC, "2")
    assert details.flag_metadata == {"source": "own", "version": 2}

    missing = client.get_integer_details("limits.nothing", 7)
    assert (missing.value, missing.error_code) == (7, ErrorCode.FLAG_NOT_FOUND)
    assert "limits.nothing" in missing.error_message
    mistyped = client.get_string_details("limits.max_items", "x")
    assert (mistyped.value, mistyped.error_code) == ("x", ErrorCode.TYPE_MISMATCH)

    stack.set(namespace, "limits.max_items", 35, reason="more")
    deadline = time.monotonic() + 10
    while client.get_integer_value("limits.max_items", 0) != 35:
        assert time.monotonic() < deadline, "the change never reached the provider"
        time.sleep(0.05)
    assert client.get_integer_details("limits.max_items", 0).variant == "3"
    api.clear_providers()
