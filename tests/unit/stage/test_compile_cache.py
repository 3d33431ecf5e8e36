from services.stage.compile_cache import BASE_ENV, range_cache_env, user_cache_root


def test_ranges_that_share_a_partition_get_their_own_roots() -> None:
    env = {"HOME": "/h", "VLLM_CACHE_ROOT": "/cache/vllm"}
    first = range_cache_env(env, 0, 16, 32)
    second = range_cache_env(env, 16, 32, 32)
    # vLLM sees the partition "16,16" at rank 0 for both: only the root tells them apart.
    assert first["VLLM_CACHE_ROOT"] != second["VLLM_CACHE_ROOT"]
    assert first["VLLM_CACHE_ROOT"] == "/cache/vllm/layerbus/layers-0-16-of-32"
    assert first[BASE_ENV] == "/cache/vllm"
    # A restart with the same range finds the same folder.
    assert range_cache_env(env, 0, 16, 32) == first


def test_a_reloaded_stage_keeps_the_users_root() -> None:
    env = {"VLLM_CACHE_ROOT": "/cache/vllm"}
    env.update(range_cache_env(env, 0, 16, 32))
    # The reload execs with the changed environment; the new range sits beside the old.
    again = range_cache_env(env, 0, 20, 32)
    assert again["VLLM_CACHE_ROOT"] == "/cache/vllm/layerbus/layers-0-20-of-32"


def test_user_root_follows_vllms_own_resolution() -> None:
    assert user_cache_root({"XDG_CACHE_HOME": "/x"}) == "/x/vllm"
    assert user_cache_root({"VLLM_CACHE_ROOT": "/v", "XDG_CACHE_HOME": "/x"}) == "/v"
    assert user_cache_root({}).endswith("/.cache/vllm")


def test_triton_cache_is_shared_and_the_startup_plan_is_on_unless_the_user_says() -> None:
    env = {"VLLM_CACHE_ROOT": "/cache/vllm"}
    first = range_cache_env(env, 0, 16, 32)
    second = range_cache_env(env, 16, 32, 32)
    # One Triton folder for every range: a restart finds vLLM's warm-up kernels there.
    assert first["TRITON_CACHE_DIR"] == second["TRITON_CACHE_DIR"] == "/cache/vllm/layerbus/triton"
    assert first["VLLM_ENABLE_STARTUP_PLAN"] == "1"
    own = {"VLLM_CACHE_ROOT": "/c", "TRITON_CACHE_DIR": "/t", "VLLM_ENABLE_STARTUP_PLAN": "0"}
    kept = range_cache_env(own, 0, 16, 32)
    assert (kept["TRITON_CACHE_DIR"], kept["VLLM_ENABLE_STARTUP_PLAN"]) == ("/t", "0")
