"""Default stage names: unique per host and process, safe as ZeroMQ identities and labels."""

from __future__ import annotations

import os
import socket

from services.stage.naming import default_stage_name, host_label, unique_stage_name


def test_two_stages_on_one_host_get_different_names() -> None:
    assert unique_stage_name("gpu-box", 4120) != unique_stage_name("gpu-box", 4121)


def test_stages_on_different_hosts_get_different_names() -> None:
    assert unique_stage_name("house-a", 7) != unique_stage_name("house-b", 7)


def test_the_name_is_the_host_label_and_the_pid() -> None:
    assert unique_stage_name("Kitchen-PC.home.example", 4120) == "kitchen-pc-4120"


def test_odd_host_names_become_safe_labels() -> None:
    assert host_label("my_box (2)") == "my-box-2"
    assert host_label("") == "stage"
    assert host_label("...") == "stage"
    assert len(host_label("x" * 100)) == 40


def test_this_process_is_named_after_its_host_and_pid() -> None:
    assert default_stage_name() == f"{host_label(socket.gethostname())}-{os.getpid()}"
