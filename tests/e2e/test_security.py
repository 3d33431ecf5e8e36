"""Acceptance (issue 8): CURVE between all services; hostile peers on loopback get nowhere.

One cluster with keys generated into a tmp folder. Hostile peers are plain
pyzmq sockets; what they achieve is checked on the receiving side: the
`layerbus_dropped_messages_total` counters of coordinator and stages,
/status, process liveness, and requests that still succeed.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zmq

from shared import codec, curve, wire
from tests.e2e.cluster import ROOT, Cluster, free_port
from tests.e2e.recovery_helpers import run_streams

pytestmark = pytest.mark.e2e

AUTHORIZED = ("gateway-a", "gateway-b", "stage-a", "stage-b", "stage-c")


class Keys:
    """Key files of one test cluster: all_dir holds every pair, authorized the listed publics."""

    def __init__(self, root: Path) -> None:
        self.all = root / "all"
        self.authorized = root / "authorized"
        self.authorized.mkdir(parents=True)
        for name in ("coordinator", "intruder", *AUTHORIZED):
            curve.generate_keys(self.all, name)
        for name in AUTHORIZED:
            (self.authorized / f"{name}.key").write_bytes((self.all / f"{name}.key").read_bytes())

    def secret(self, name: str) -> str:
        return str(self.all / f"{name}.key_secret")

    def public(self, name: str) -> str:
        return str(self.all / f"{name}.key")

    def options(self, name: str, server: str) -> curve.CurveOptions:
        return curve.CurveOptions(
            curve.load_key_pair(self.secret(name)), curve.load_public_key(self.public(server))
        )


class Secured:
    """The running cluster plus its keys and metrics ports."""

    def __init__(self, cluster: Cluster, keys: Keys, metrics: dict[str, int]) -> None:
        self.cluster = cluster
        self.keys = keys
        self.metrics = metrics
        self.ctx = zmq.Context()

    def peer(
        self, address: str, name: str | None, server: str, identity: bytes | None = None
    ) -> zmq.Socket:  # type: ignore[type-arg]
        """A DEALER to address: CURVE with key name (None: plaintext)."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        if name is not None:
            self.keys.options(name, server).apply(sock)
        sock.connect(address)
        return sock

    def dropped(self, service: str) -> dict[tuple[str, str], float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics[service]}/metrics", timeout=10).text
        out = {}
        for labels, value in re.findall(r"layerbus_dropped_messages_total\{([^}]*)\} (\S+)", text):
            found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            out[(found["socket"], found["reason"])] = float(value)
        return out

    def wait_dropped(self, service: str, key: tuple[str, str], above: float) -> float:
        """The counter once it exceeds above, or its value after a bounded wait."""
        for _ in range(120):
            value = self.dropped(service).get(key, 0.0)
            if value > above:
                return value
            time.sleep(0.5)
        return self.dropped(service).get(key, 0.0)

    def stage_address(self, index: int) -> str:
        stages = httpx.get(self.cluster.url + "/status", timeout=10).json()["stages"]
        return str(sorted(stages, key=lambda s: s["layer_start"])[index]["address"])

    def stage_names(self) -> list[str]:
        stages = httpx.get(self.cluster.url + "/status", timeout=10).json()["stages"]
        return sorted(s["name"] for s in stages)


@pytest.fixture(scope="module")
def secured(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    keys = Keys(tmp_path_factory.mktemp("keys"))
    metrics = {"coordinator": free_port(), "stage-a": free_port(), "stage-b": free_port()}
    coordinator = ["--secret-key", keys.secret("coordinator")]
    coordinator += ["--authorized-keys", str(keys.authorized)]
    coordinator += ["--metrics-port", str(metrics["coordinator"])]
    stage_args = [
        ["--secret-key", keys.secret(name), "--coordinator-key", keys.public("coordinator")]
        + ["--metrics-port", str(metrics[name])]
        for name in ("stage-a", "stage-b")
    ]
    gateway = ["--secret-key", keys.secret("gateway-a")]
    gateway += ["--coordinator-key", keys.public("coordinator")]
    cluster = Cluster(
        model=model_path,
        layers=[(0, 15), (15, 30)],
        log_dir=tmp_path_factory.mktemp("secured"),
        coordinator_args=coordinator,
        stage_args=stage_args,
        gateway_args=gateway,
    )
    try:
        cluster.start()
        yield Secured(cluster, keys, metrics)
    finally:
        cluster.stop()


def ask_paris(cluster: Cluster) -> None:
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 16,
    }
    resp = httpx.post(cluster.url + "/v1/chat/completions", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    assert "Paris" in resp.json()["choices"][0]["message"]["content"]


def all_alive(cluster: Cluster) -> None:
    dead = {name: p.returncode for name, p in cluster.procs.items() if p.poll() is not None}
    assert not dead, dead


def next_answer(sock: zmq.Socket[bytes], timeout_ms: int, what: str) -> object:
    """The coordinator's next message to a gateway socket, past its receipts (wire.Accepted)."""
    for _ in range(16):  # one receipt per Generate sent; a test sends a few at most
        assert sock.poll(timeout_ms), what
        msg = codec.decode(sock.recv_multipart())
        if not isinstance(msg, wire.Accepted):
            return msg
    raise AssertionError(f"only receipts, never an answer: {what}")


def register(name: str, fingerprint: str = "forged") -> wire.Register:
    return wire.Register(
        name=name,
        layer_start=0,
        layer_end=15,
        num_layers=30,
        data_address="tcp://127.0.0.1:9",
        kv_cache_specs=b"",
        available_kv_bytes=1 << 30,
        kv_cache_layouts=["NHD"],
        engine_fingerprint=fingerprint,
        pid=1,
    )


def bad_step(step_id: int, block: int, generation: int = 0) -> wire.Step:
    plan = wire.StepPlan(
        new_requests=[
            wire.NewRequestPlan(
                req_id="evil",
                prompt_token_ids=[1, 2, 3],
                sampling_params=b"\x80",
                block_ids=[[block]],
                num_computed_tokens=0,
            )
        ],
        cached=wire.CachedRequestsPlan([], [], [], {}, [], [], []),
        num_scheduled_tokens={"evil": 3},
        total_num_scheduled_tokens=3,
        finished_req_ids=[],
    )
    return wire.Step(step_id=step_id, plan=plan, tensors=[], generation=generation)


def hostile_messages() -> list[wire.Step | wire.Register | wire.Heartbeat | wire.Abort]:
    return [
        register("stage-a"),
        wire.Heartbeat(name="stage-a", seq=1),
        wire.StepResult(step_id=1, req_ids=[], sampled_token_ids=[], error="forged failure"),
        wire.Abort(request_ids=["anything"]),
        wire.Generate(request_id="evil", prompt_token_ids=[1], sampling=wire.SamplingSpec(4)),
        bad_step(1, 10**6),
    ]  # type: ignore[list-item]


def test_round_trip_with_curve_between_all_services(secured: Secured) -> None:
    ask_paris(secured.cluster)
    assert secured.stage_names() == ["stage-a", "stage-b"]


def test_unlisted_and_plaintext_peers_are_refused(secured: Secured) -> None:
    before = secured.stage_names()
    targets = [
        (secured.cluster.coordinator, "coordinator", "coordinator"),
        (secured.stage_address(0), "stage-a", "stage-a"),
        (secured.stage_address(1), "stage-b", "stage-b"),
    ]
    for address, server, service in targets:
        refused_before = secured.dropped(service).get(
            ("coordinator" if service == "coordinator" else "stage-data", "unlisted-key"), 0
        )
        for name in ("intruder", None):
            sock = secured.peer(address, name, server, identity=b"stage-a")
            for msg in hostile_messages():
                # Again: nothing queued, no connection was ever admitted.
                with contextlib.suppress(zmq.Again):
                    sock.send_multipart(codec.encode(msg), zmq.NOBLOCK)
            assert not sock.poll(1000), f"{address} answered a hostile peer"
            sock.close()
        socket = "coordinator" if service == "coordinator" else "stage-data"
        refused = secured.wait_dropped(service, (socket, "unlisted-key"), refused_before)
        assert refused > refused_before
    assert secured.stage_names() == before
    all_alive(secured.cluster)
    ask_paris(secured.cluster)


def test_a_gateway_cannot_abort_another_gateways_request(secured: Secured) -> None:
    owner = secured.peer(secured.cluster.coordinator, "gateway-b", "coordinator", b"gw-owner")
    other = secured.peer(secured.cluster.coordinator, "gateway-a", "coordinator", b"gw-other")
    spec = wire.SamplingSpec(max_tokens=48, temperature=0.0, ignore_eos=True)
    owner.send_multipart(codec.encode(wire.Generate("victim-1", [1, 2, 3, 4], spec)))
    tokens, finish = 0, None
    while finish is None:
        out = next_answer(owner, 120_000, "no output for the owner's request")
        assert isinstance(out, wire.Outputs)
        for item in out.items:
            tokens += len(item.token_ids)
            finish = item.finish_reason or finish
            if tokens and finish is None:
                other.send_multipart(codec.encode(wire.Abort(request_ids=["victim-1"])))
    assert (finish, tokens) == ("length", 48)
    owner.close()
    other.close()


def test_a_stage_key_cannot_submit_a_generate(secured: Secured) -> None:
    before = secured.dropped("coordinator").get(("coordinator", "role"), 0)
    sock = secured.peer(secured.cluster.coordinator, "stage-b", "coordinator", b"stage-probe")
    spec = wire.SamplingSpec(max_tokens=4)
    sock.send_multipart(codec.encode(wire.Generate("from-a-stage", [1, 2, 3], spec)))
    assert not sock.poll(2000)
    sock.close()
    assert secured.wait_dropped("coordinator", ("coordinator", "role"), before) == before + 1


@pytest.mark.parametrize(
    ("prompt", "sampling", "fragment"),
    [
        ([1, 2, 10**6], {}, "vocabulary"),
        ([1, 2, 3], {"top_k": -9}, "top_k"),
        ([1, 2, 3], {"temperature": -1.0}, "temperature"),
    ],
)
def test_garbage_generate_fails_only_that_request(
    secured: Secured, prompt: list[int], sampling: dict[str, object], fragment: str
) -> None:
    sock = secured.peer(secured.cluster.coordinator, "gateway-b", "coordinator", b"gw-garbage")
    spec = wire.SamplingSpec(max_tokens=4, **sampling)  # type: ignore[arg-type]
    sock.send_multipart(codec.encode(wire.Generate("garbage", prompt, spec)))
    out = next_answer(sock, 60_000, "no answer to a bad Generate")
    sock.close()
    assert isinstance(out, wire.Outputs)
    assert out.items[0].finish_reason == "error"
    assert fragment in (out.items[0].error or "")
    ask_paris(secured.cluster)


def test_a_step_with_out_of_range_blocks_is_refused_and_the_stage_keeps_serving(
    secured: Secured,
) -> None:
    before = secured.dropped("stage-a").get(("stage-data", "invalid"), 0)
    # The coordinator's own key: the one upstream stage 0 accepts.
    sock = secured.peer(secured.stage_address(0), "coordinator", "stage-a")
    # The current chain generation: a step of another generation is dropped before any check.
    generation = httpx.get(secured.cluster.url + "/status", timeout=10).json()["coordinator"][
        "generation"
    ]
    step = bad_step(random.randrange(1 << 40, 1 << 50), 10**6, generation)
    sock.send_multipart(codec.encode(step))
    sock.close(linger=5000)
    assert secured.wait_dropped("stage-a", ("stage-data", "invalid"), before) == before + 1
    ask_paris(secured.cluster)
    all_alive(secured.cluster)


def greedy_texts(cluster: Cluster) -> list[str]:
    results = run_streams(cluster.url, 4, 24)
    assert all(r.error is None and r.finish == "length" for r in results), results
    return [r.text for r in results]


def forged_tokens(secured: Secured) -> list[wire.Tokens]:
    """Ring tokens for the steps about to be planned: each would fill its plan with 0s."""
    coordinator = httpx.get(secured.cluster.url + "/status", timeout=10).json()["coordinator"]
    first = max(1, coordinator["steps"] - 8)
    return [
        wire.Tokens(step_id=s, generation=coordinator["generation"])
        for s in range(first, first + 600)
    ]


def test_forged_ring_tokens_are_dropped_and_the_text_stays(secured: Secured) -> None:
    reference = greedy_texts(secured.cluster)
    key = ("stage-data", "unauthorized")
    before = secured.dropped("stage-a").get(key, 0)
    # The coordinator's key passes the first stage's handshake (it sends the steps), but
    # only the last stage may send sampled tokens; the coordinator only failed=True ones.
    sock = secured.peer(secured.stage_address(0), "coordinator", "stage-a")
    forged = forged_tokens(secured)
    for msg in forged:
        sock.send_multipart(codec.encode(msg))
    sock.close(linger=5000)
    assert secured.wait_dropped("stage-a", key, before + len(forged) - 1) == before + len(forged)
    # Had they been taken, the plans of these steps would run on token 0.
    assert greedy_texts(secured.cluster) == reference
    # Keys that are not in the chain (another gateway, a stage outside it) never get
    # past the handshake of the first stage's activation socket.
    for name in ("gateway-a", "stage-c"):
        unlisted = ("stage-data", "unlisted-key")
        refused_before = secured.dropped("stage-a").get(unlisted, 0)
        sock = secured.peer(secured.stage_address(0), name, "stage-a")
        for msg in forged_tokens(secured):
            with contextlib.suppress(zmq.Again):
                sock.send_multipart(codec.encode(msg), zmq.NOBLOCK)
        assert secured.wait_dropped("stage-a", unlisted, refused_before) > refused_before
        sock.close(linger=0)
        assert greedy_texts(secured.cluster) == reference
    all_alive(secured.cluster)


def test_a_refused_registration_never_hands_out_the_engine_fingerprint(secured: Secured) -> None:
    sock = secured.peer(secured.cluster.coordinator, "stage-c", "coordinator", b"stage-c")
    sock.send_multipart(codec.encode(register("stage-c")))
    assert sock.poll(30_000), "no refusal"
    reply = codec.decode(sock.recv_multipart())
    sock.close()
    assert isinstance(reply, wire.Shutdown)
    assert "max_num_batched_tokens" not in reply.reason and "dtype=" not in reply.reason
    assert "stage-c" not in secured.stage_names()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fuzz_frames(rng: random.Random) -> list[bytes]:
    """One malformed, truncated, oversized, reordered or random multipart message."""
    valid = [
        codec.encode(register("stage-a")),
        codec.encode(wire.Heartbeat(name="stage-b", seq=rng.randrange(1 << 30))),
        codec.encode(bad_step(rng.randrange(1 << 40, 1 << 50), rng.randrange(1 << 31))),
        codec.encode(wire.Abort(request_ids=["x" * rng.randrange(300)])),
    ]
    frames = list(rng.choice(valid))
    kind = rng.randrange(6)
    if kind == 0:  # truncated body
        frames[1] = frames[1][: rng.randrange(len(frames[1]))]
    elif kind == 1:  # random tag
        frames[0] = bytes([rng.randrange(256)])
    elif kind == 2:  # reordered frames
        frames.reverse()
    elif kind == 3:  # random frames
        frames = [rng.randbytes(rng.randrange(64)) for _ in range(rng.randrange(1, 6))]
    elif kind == 4:  # extra tensor frames the header does not announce
        frames += [rng.randbytes(rng.randrange(1024))]
    else:  # bit flips
        body = bytearray(frames[1])
        for _ in range(4):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        frames[1] = bytes(body)
    return frames


def test_fuzzed_messages_to_every_listening_socket(secured: Secured) -> None:
    rng = random.Random(8)
    pids = secured.cluster.pids()
    targets = [
        (secured.cluster.coordinator, "gateway-b", "coordinator"),
        (secured.stage_address(0), "coordinator", "stage-a"),
        (secured.stage_address(1), "stage-a", "stage-b"),
    ]
    rss_before = {name: rss_kib(pid) for name, pid in pids.items()}
    for address, key, server in targets:
        for _ in range(12):  # oversized: libzmq drops each such connection
            big = secured.peer(address, key, server)
            big.send_multipart([b"\x30", b"\x00" * (16 << 20)])
            # Linger 0: a lingering socket would reconnect and resend it for as long.
            time.sleep(0.5)
            big.close(linger=0)
        sock = secured.peer(address, key, server)
        for _ in range(1200):
            assert sock.poll(30_000, zmq.POLLOUT)
            sock.send_multipart(fuzz_frames(rng))
        sock.close(linger=10_000)
    ask_paris(secured.cluster)
    all_alive(secured.cluster)
    growth = {name: rss_kib(pid) - rss_before[name] for name, pid in pids.items()}
    assert all(kib < 64 * 1024 for kib in growth.values()), growth
    assert os.path.exists(secured.keys.secret("coordinator"))


def test_a_stage_without_keys_refuses_a_public_bind(model_path: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), LAYERBUS_MODEL=model_path)
    proc = subprocess.run(
        [sys.executable, "-m", "services.ops.cli", "stage", "--layers", "0:15"]
        + ["--bind", "tcp://0.0.0.0:0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "--secret-key" in err and "--insecure" in err
    assert "layers loaded" not in err
