"""Node settings from TOML files and flags: every bad field stops the node with one clear line."""

from pathlib import Path

import pytest

from zkv.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]

VALID = """
id = "n1"
host = "10.0.0.5"
port = 7500
data_dir = "/var/lib/zkv/n1"
seeds = ["10.0.0.6:7500", "tcp://10.0.0.7:7500"]
metrics_port = 9100
replicas = 5
vnodes = 32
consistency = "all"

[timers]
gossip_interval = 0.5
t_fail = 3
t_remove = 20.0

[limits]
max_key = "2KiB"
max_value = 4096

[durability]
sync = false
map_size = "128MiB"

[memory]
record_cache = "4MiB"
"""


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, overrides: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), overrides)
    return info.value


def test_a_valid_file_sets_every_field(tmp_path):
    s = load_settings(write(tmp_path, VALID))
    assert s.node.node_id == "n1"
    assert s.address == s.node.address == "tcp://10.0.0.5:7500"
    assert s.port == 7500 and s.host == "10.0.0.5"
    assert s.data_dir == Path("/var/lib/zkv/n1")
    assert s.node.seeds == ("tcp://10.0.0.6:7500", "tcp://10.0.0.7:7500")
    assert s.effective_metrics_port == 9100
    assert (s.node.replicas, s.node.vnodes, s.node.consistency) == (5, 32, "all")
    assert (s.node.gossip_interval, s.node.t_fail, s.node.t_remove) == (0.5, 3.0, 20.0)
    assert (s.node.max_key, s.node.max_value) == (2048, 4096)
    assert s.sync is False and s.map_size == 128 * 1024 * 1024
    assert s.record_cache == 4 * 1024 * 1024


def test_a_minimal_file_gets_the_defaults(tmp_path):
    s = load_settings(write(tmp_path, 'id = "solo"\n'))
    assert s.address == "tcp://127.0.0.1:7400"
    assert s.data_dir == Path("zkv-data/solo")
    assert s.node.seeds == () and s.node.replicas == 3 and s.node.consistency == "quorum"
    assert s.effective_metrics_port == 7402  # port + 2
    assert s.sync is True
    assert s.record_cache == 16 * 1024 * 1024


def test_flags_override_the_file(tmp_path):
    s = load_settings(write(tmp_path, VALID), {"port": 8000, "t_fail": 4.0, "seeds": "a:1,b:2",
                                               "sync": True, "max_value": "1MiB", "host": None})
    assert s.port == 8000 and s.address == "tcp://10.0.0.5:8000"  # host None: file wins
    assert s.node.t_fail == 4.0 and s.node.t_remove == 20.0
    assert s.node.seeds == ("tcp://a:1", "tcp://b:2")
    assert s.sync is True and s.node.max_value == 1024 * 1024


def test_flags_alone_are_enough():
    s = load_settings(None, {"id": "n2", "port": 7600, "gossip_interval": 0.1, "t_fail": 1,
                             "t_remove": 4})
    assert s.node.node_id == "n2" and s.port == 7600 and s.node.t_remove == 4.0


def test_a_node_may_list_itself_to_found_a_cluster(tmp_path):
    s = load_settings(write(tmp_path, 'id = "a"\nport = 7400\nseeds = ["127.0.0.1:7400", '
                                      '"127.0.0.1:7403"]\n'))
    assert s.node.seeds == ("tcp://127.0.0.1:7400", "tcp://127.0.0.1:7403")


def test_the_example_files_are_valid():
    files = sorted((REPO / "conf").glob("*/*.toml"))
    assert len(files) >= 6
    ids = set()
    for path in files:
        ids.add(load_settings(path).node.node_id)
    assert len(ids) == len(files)


@pytest.mark.parametrize(("text", "field", "problem"), [
    ('id = "a"\nport = "7400"\n', "port", "must be an integer from 1 to 65533"),
    ('id = "a"\nport = 70000\n', "port", "must be an integer from 1 to 65533"),
    ('id = "a"\nport = true\n', "port", "must be an integer"),
    ('id = ""\n', "id", "must be 1 to 64 letters"),
    ('id = "a b"\n', "id", "must be 1 to 64 letters"),
    ('id = "a"\nhost = "0.0.0.0"\n', "host", "not a wildcard"),
    ('id = "a"\nhost = "tcp://x"\n', "host", "must be a host name"),
    ('id = "a"\nseeds = "10.0.0.1:7400"\n', "seeds", "must be a list"),
    ('id = "a"\nseeds = ["10.0.0.1"]\n', "seeds", "entry 1 must be an address"),
    ('id = "a"\nreplicas = 0\n', "replicas", "must be an integer from 1"),
    ('id = "a"\nvnodes = 1.5\n', "vnodes", "must be an integer"),
    ('id = "a"\nconsistency = "most"\n', "consistency", "must be one of one, quorum, all"),
    ('id = "a"\nmetrics_port = 7401\n', "metrics_port", "must differ from port"),
    ('id = "a"\n[timers]\nt_fail = "two"\n', "timers.t_fail", "must be a number of seconds"),
    ('id = "a"\n[timers]\ngossip_interval = 0\n', "timers.gossip_interval",
     "greater than 0"),
    ('id = "a"\n[timers]\nt_fail = 9\n', "timers.t_remove", "must be greater than t_fail"),
    ('id = "a"\n[timers]\ngossip_interval = 5\n', "timers.t_fail",
     "must be greater than gossip_interval"),
    ('id = "a"\n[limits]\nmax_key = 0\n', "limits.max_key", "must be from 1"),
    ('id = "a"\n[limits]\nmax_value = "lots"\n', "limits.max_value", "must be a size"),
    ('id = "a"\n[durability]\nsync = "yes"\n', "durability.sync", "must be true or false"),
    ('id = "a"\n[durability]\nmap_size = 1024\n', "durability.map_size", "must be from"),
    ('id = "a"\ncolour = "blue"\n', "colour", "unknown field"),
    ('id = "a"\n[timers]\nt_fial = 1\n', "timers.t_fial", "did you mean t_fail?"),
    ('id = "a"\nt_fail = 1\n', "t_fail", "belongs in the [timers] section"),
    ('id = "a"\ntimers = 3\n', "timers", "must be a table"),
    ('port = 7400\n', "id", "is required"),
])
def test_each_bad_field_is_named_with_its_file_and_problem(tmp_path, text, field, problem):
    err = error_of(tmp_path, text)
    path = str(tmp_path / "node.toml")
    assert err.source == path and err.field == field
    assert problem in err.problem
    assert str(err).startswith(f"{path}: {field}: ")
    assert "\n" not in str(err)


def test_a_bad_flag_is_named_as_a_flag(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, VALID), {"t_remove": -1.0})
    assert str(info.value).startswith("command line: --t-remove: must be a number of seconds")


def test_an_inconsistency_names_the_field_where_it_was_set(tmp_path):
    # t_fail comes from the file (3), t_remove from a flag (2): the flag is what breaks the rule.
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, VALID), {"t_remove": 2.0})
    assert info.value.field == "--t-remove" and info.value.source == "command line"


def test_syntax_errors_and_missing_files_name_the_file(tmp_path):
    err = error_of(tmp_path, 'id = "a"\nport = \n')
    assert err.source.endswith("node.toml") and "not valid TOML" in err.problem
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "absent.toml")
    assert "cannot read the file" in str(info.value)


def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("")
    err = error_of(tmp_path, f'id = "a"\ndata_dir = "{tmp_path / "taken"}"\n')
    assert err.field == "data_dir" and "not a directory" in err.problem


# --------------------------------------------------------------------------- security


@pytest.fixture
def key_dir(tmp_path):
    from zkv.keys import generate

    public, _secret = generate(tmp_path / "private", "cluster")
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / public.name).write_bytes(public.read_bytes())
    return tmp_path


def test_security_fields_are_read_and_checked(tmp_path, key_dir):
    text = (f'id = "a"\n[security]\ncurve = true\n'
            f'secret_key = "{key_dir / "private" / "cluster.key_secret"}"\n'
            f'authorized_keys = "{key_dir / "authorized"}"\n')
    s = load_settings(write(tmp_path, text))
    assert s.curve is True
    assert s.secret_key == key_dir / "private" / "cluster.key_secret"
    assert s.authorized_keys == key_dir / "authorized"
    assert load_settings(write(tmp_path, text), {"curve": False}).curve is False


def test_security_is_off_by_default(tmp_path):
    s = load_settings(write(tmp_path, 'id = "a"\n'))
    assert s.curve is False and s.secret_key is None and s.authorized_keys is None


@pytest.mark.parametrize(("section", "field", "problem"), [
    ('curve = true\n', "security.secret_key", "is required when security.curve is true"),
    ('curve = true\nsecret_key = "{d}/private/cluster.key_secret"\n',
     "security.authorized_keys", "is required"),
    ('curve = true\nsecret_key = "{d}/authorized/cluster.key"\nauthorized_keys = "{d}"\n',
     "security.secret_key", "holds no secret key"),
    ('curve = true\nsecret_key = "{d}/absent.key_secret"\nauthorized_keys = "{d}"\n',
     "security.secret_key", "cannot read a key"),
    (('curve = true\nsecret_key = "{d}/private/cluster.key_secret"\n'
      'authorized_keys = "{d}/nowhere"\n'), "security.authorized_keys", "is not a directory"),
    (('curve = true\nsecret_key = "{d}/private/cluster.key_secret"\n'
      'authorized_keys = "{d}/private/empty"\n'), "security.authorized_keys",
     "holds no public .key file"),
    ('curve = "yes"\n', "security.curve", "must be true or false"),
    ('secret_key = 3\n', "security.secret_key", "must be a path"),
    ('cruve = true\n', "security.cruve", "did you mean curve?"),
])
def test_each_bad_security_field_is_named(tmp_path, key_dir, section, field, problem):
    (key_dir / "private" / "empty").mkdir()
    err = error_of(tmp_path, 'id = "a"\n[security]\n' + section.replace("{d}", str(key_dir)))
    assert err.field == field and problem in err.problem, str(err)
    assert "\n" not in str(err)


def test_a_bad_security_flag_is_named_as_a_flag(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"id": "a", "curve": True})
    assert str(info.value).startswith("command line: security.secret_key: is required") or \
        str(info.value).startswith("command line: --secret-key: is required")
