from pathlib import Path

import pytest

from rtserver.config import ConfigError, load_config


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    toml = tmp_path / "rtserver.toml"
    toml.write_text("[server]\nport = 9000\nmax_sessions = 3\nanalysis_fps = 5.0\n")
    env = {"RTSERVER_PORT": "9100", "RTSERVER_ICE_ADDRESSES": "127.0.0.1, ::1"}
    config = load_config({"port": 9200, "host": None}, env, toml)
    assert config.port == 9200  # CLI wins
    assert config.max_sessions == 3  # only the file sets it
    assert config.analysis_fps == 5.0
    assert config.ice_addresses == ("127.0.0.1", "::1")
    assert config.host == "127.0.0.1"  # default: an unset flag does not override


def test_env_beats_file_and_data_dir_paths(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("port = 9000\n")
    config = load_config({}, {"RTSERVER_PORT": "9100", "RTSERVER_DATA_DIR": "/x"}, toml)
    assert config.port == 9100
    assert config.db_path == Path("/x/rtserver.sqlite3")
    assert config.key_path == Path("/x/api_key")


def test_config_file_from_env(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('analysis = "decode"\n')
    config = load_config({}, {"RTSERVER_CONFIG": str(toml)})
    assert config.analysis == "decode"
    assert load_config({}, {}).analysis == "full"


@pytest.mark.parametrize(
    ("cli", "env"),
    [
        ({"port": "eighty"}, {}),
        ({}, {"RTSERVER_MAX_SESSIONS": "many"}),
        ({"analysis": "everything"}, {}),
        ({"analysis_fps": 0.0}, {}),
        ({"max_sessions": -1}, {}),
        ({"max_cpu": 1.5}, {}),
        ({}, {"RTSERVER_SESSION_CPU": "-0.1"}),
        ({}, {"RTSERVER_EMOTION": "maybe"}),
        ({"detector": "mtcnn"}, {}),
        ({}, {"RTSERVER_ENGINE": "tensorrt,openvino"}),
        ({"detect_fps": 0.0}, {}),
        ({"max_batch": 64, "batch_queue": 8}, {}),
        ({"reconnect_grace_s": -1.0}, {}),
        ({}, {"RTSERVER_MAX_WATCHERS": "-1"}),
        ({}, {"RTSERVER_ASR_DEVICE": "gpu"}),
        ({}, {"RTSERVER_MASTER_KEY": "c2hvcnQ="}),  # base64, but 5 bytes
        ({}, {"RTSERVER_MASTER_KEY": "not base64!"}),
        ({}, {"RTSERVER_MASTER_KEY": "A" * 43 + "=,c2hvcnQ="}),  # the second is short
    ],
)
def test_bad_values_are_typed_errors(cli: dict[str, object], env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_config(cli, env)


def test_unknown_file_setting_is_an_error(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config({}, {}, toml)


def test_emotion_switch_engine_order_and_models_dir(tmp_path: Path) -> None:
    defaults = load_config({}, {})
    assert defaults.emotion == "on" and defaults.detector == "blazeface"
    assert defaults.engine[-1] == "onnxruntime-cpu"  # the CPU always comes last, as fallback
    assert defaults.batch_wait_s == 0.004 and defaults.detect_fps == 5.0
    assert defaults.models_path == defaults.data_dir / "models"
    env = {
        "RTSERVER_EMOTION": "off",
        "RTSERVER_ENGINE": "onnxruntime-cuda, onnxruntime-cpu",
        "RTSERVER_MODELS_DIR": str(tmp_path),
    }
    config = load_config({}, env)
    assert config.emotion == "off"
    assert config.engine == ("onnxruntime-cuda", "onnxruntime-cpu")
    assert config.models_path == tmp_path
    assert load_config({"engine": ["onnxruntime-cpu"]}, env).engine == ("onnxruntime-cpu",)


def test_speech_model_and_device(tmp_path: Path) -> None:
    defaults = load_config({}, {"RTSERVER_MODELS_DIR": str(tmp_path)})
    assert defaults.asr_device == "auto"
    assert defaults.asr_model_path == tmp_path / "asr_tiny_en"  # the fetched tiny.en
    toml = tmp_path / "c.toml"
    toml.write_text('[server]\nasr_model = "/srv/whisper-base.en"\nasr_device = "cuda"\n')
    config = load_config({}, {}, toml)
    assert config.asr_model_path == Path("/srv/whisper-base.en") and config.asr_device == "cuda"
    env = {"RTSERVER_ASR_MODEL": "/srv/small.en", "RTSERVER_ASR_DEVICE": "cpu"}
    config = load_config({}, env, toml)
    assert config.asr_model_path == Path("/srv/small.en") and config.asr_device == "cpu"
    config = load_config({"asr_model": "/m", "asr_device": "auto"}, env, toml)  # CLI wins
    assert config.asr_model_path == Path("/m") and config.asr_device == "auto"


def test_reconnect_grace_and_watchers() -> None:
    defaults = load_config({}, {})
    assert defaults.reconnect_grace_s == 20.0 and defaults.max_watchers == 4
    env = {"RTSERVER_RECONNECT_GRACE_S": "5", "RTSERVER_MAX_WATCHERS": "2"}
    config = load_config({}, env)
    assert config.reconnect_grace_s == 5.0 and config.max_watchers == 2
    assert load_config({"reconnect_grace_s": 3.0}, env).reconnect_grace_s == 3.0  # CLI wins


def test_config_crosses_to_a_worker_unchanged() -> None:
    from rtserver.config import config_from_wire, config_to_wire

    config = load_config(
        {"workers": 3, "ice_addresses": ["127.0.0.1"], "data_dir": "/tmp/x", "emotion": "off"},
        {},
    )
    assert config.workers == 3
    assert config_from_wire(config_to_wire(config)) == config


def test_workers_default_to_one_per_core_and_are_bounded() -> None:
    assert load_config({}, {}).workers == 0  # resolved to os.cpu_count() at start
    assert load_config({}, {"RTSERVER_WORKERS": "2"}).workers == 2
    with pytest.raises(ConfigError):
        load_config({"workers": -1}, {})


def test_max_interview_length() -> None:
    assert load_config({}, {}).max_interview_s == 3600.0
    assert load_config({}, {"RTSERVER_MAX_INTERVIEW_S": "1800"}).max_interview_s == 1800.0
    assert load_config({"max_interview_s": 60.0}, {}).max_interview_s == 60.0
    for bad in (0.0, -1.0, 7 * 24 * 3600.0):
        with pytest.raises(ConfigError, match="max_interview_s"):
            load_config({"max_interview_s": bad}, {})


def test_the_session_ceiling_follows_the_machine() -> None:
    import os

    from rtserver.config import SESSIONS_PER_CORE

    config = load_config({}, {})
    assert config.max_sessions == 0 and config.max_cpu == 0.9
    assert config.session_limit == SESSIONS_PER_CORE * (os.cpu_count() or 1)
    assert load_config({"max_sessions": 5}, {}).session_limit == 5


def test_retention_and_the_notices_contact() -> None:
    defaults = load_config({}, {})
    assert defaults.retention_days == 180 and defaults.retention_sweep_s == 3600.0
    assert defaults.alternative_process_contact == ""
    env = {
        "RTSERVER_RETENTION_DAYS": "30",
        "RTSERVER_RETENTION_SWEEP_S": "0",
        "RTSERVER_ALTERNATIVE_PROCESS_CONTACT": "accommodations@example.com",
    }
    config = load_config({}, env)
    assert config.retention_days == 30 and config.retention_sweep_s == 0.0  # 0: no sweeper
    assert config.alternative_process_contact == "accommodations@example.com"
    for bad in ({"retention_days": 0}, {"retention_days": 3651}, {"retention_sweep_s": 0.5}):
        with pytest.raises(ConfigError, match="retention"):
            load_config(bad, {})


def test_master_key_from_the_environment_or_a_keyring_file(tmp_path: Path) -> None:
    key = "A" * 43 + "="  # base64 of 32 zero bytes
    config = load_config({"data_dir": str(tmp_path)}, {"RTSERVER_MASTER_KEY": f"{key},{key}"})
    assert config.master_key == f"{key},{key}" and key not in repr(config)
    assert load_config({"data_dir": "/d"}, {}).master_key_path == Path("/d/master.keys")
    elsewhere = load_config({"master_key_file": "/secrets/ring"}, {"RTSERVER_DATA_DIR": "/d"})
    assert elsewhere.master_key_path == Path("/secrets/ring")


def test_many_hosts_settings() -> None:
    bus, store = "redis://:pw@10.0.0.5:6379/0", "postgresql://rt:pw@10.0.0.6/rtserver"
    node = load_config(
        {"role": "node", "bus": bus, "store": store, "node_id": "media-3"},
        {"RTSERVER_CLUSTER_SECRET": "s3cret", "RTSERVER_NODE_TTL_S": "8"},
    )
    assert (node.role, node.node, node.node_ttl_s, node.clustered) == ("node", "media-3", 8.0, True)
    assert node.cluster_secret == "s3cret" and "s3cret" not in repr(node)
    assert bus not in repr(node) and store not in repr(node)  # URLs may carry passwords
    embedded = load_config({}, {})
    assert (embedded.role, embedded.clustered, embedded.store) == ("all", False, "")
    assert embedded.node  # the host name when no id is given
    refused = [
        ({"role": "front"}, "needs a bus"),
        ({"bus": bus}, "say which this process is"),
        ({"role": "node", "bus": "http://10.0.0.5"}, "redis://"),
        ({"store": "mysql://x"}, "postgresql://"),
        ({"role": "node", "bus": bus, "node_ttl_s": 0.5}, "node_ttl_s"),
        ({"role": "node", "bus": bus, "workers": 4}, "one process"),
        ({"role": "cache"}, "role must be"),
    ]
    for cli, message in refused:
        with pytest.raises(ConfigError, match=message):
            load_config(cli, {})
