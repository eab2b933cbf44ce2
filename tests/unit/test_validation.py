import msgspec
import pytest

from services.gateway.core.validation import (
    PartitionCapacity,
    RequestInvalid,
    decode_submit,
    parse_job_id,
    parse_listing,
    to_spec,
)

PARTITIONS = {"default": PartitionCapacity(max_cpus=4, max_memory_mb=8192)}
ROOTS = ["/jobs"]


def body(**job):
    base = {"account": "acct", "name": "n", "partition": "default", "current_working_directory": "/jobs/a",
            "standard_output": "out-%j", "standard_error": "err", "time_limit": "30"}
    return msgspec.json.encode({"job": {**base, **job}, "script": "echo hi", "unknown": 1})


def errors_of(raw: bytes) -> list[dict]:
    with pytest.raises(RequestInvalid) as caught:
        to_spec(decode_submit(raw), PARTITIONS, ROOTS)
    return caught.value.errors


def test_a_valid_request_becomes_a_spec():
    spec = to_spec(decode_submit(body(ntasks_per_node=2, cpus_per_task="2", memory_per_node="2g")), PARTITIONS, ROOTS)
    assert (spec.cpus, spec.memory_mb, spec.time_limit_s, spec.cwd) == (4, 2048, 1800, "/jobs/a")


def test_the_data_source_is_api_unless_the_command_line_says_cli():
    assert to_spec(decode_submit(body()), PARTITIONS, ROOTS).data_source == "API"
    assert to_spec(decode_submit(body(data_source="CLI")), PARTITIONS, ROOTS).data_source == "CLI"
    with pytest.raises(RequestInvalid) as caught:
        decode_submit(body(data_source="SLURM"))
    assert caught.value.errors[0]["loc"] == ["body", "job", "data_source"]


def test_missing_field_in_fastapi_shape():
    raw = msgspec.json.encode({"job": {"name": "n"}, "script": "x"})
    with pytest.raises(RequestInvalid) as caught:
        decode_submit(raw)
    (error,) = caught.value.errors
    assert error["type"] == "missing" and error["loc"][:2] == ["body", "job"] and error["msg"] == "Field required"


def test_malformed_json_is_422_material():
    with pytest.raises(RequestInvalid) as caught:
        decode_submit(b"{")
    assert caught.value.errors[0]["type"] == "json_invalid"


@pytest.mark.parametrize("field, value", [
    ("time_limit", "-5"), ("partition", "nope"), ("current_working_directory", "/etc"),
    ("current_working_directory", "/jobs/../etc"), ("current_working_directory", "relative"),
    ("standard_output", "../../etc/x"), ("cpus_per_task", 5), ("memory_per_node", "9G"),
])
def test_rules_name_the_field(field, value):
    errors = errors_of(body(**{field: value}))
    assert any(e["loc"] == ["body", "job", field] and e["msg"].startswith("Value error, ") for e in errors), errors


def test_blank_script():
    raw = msgspec.json.encode({"job": msgspec.json.decode(body())["job"], "script": "  \n"})
    assert errors_of(raw)[0]["loc"] == ["body", "script"]


def test_unknown_partition_lists_the_known_ones():
    (error,) = errors_of(body(partition="gpu"))
    assert "default" in error["msg"]


def test_job_id_path_parameter():
    assert parse_job_id("1001") == 1001
    assert parse_job_id("-1") == -1  # an integer, as the original took it: then simply not found
    for bad in ("abc", "1.5", "１", "٣", "9" * 19):
        with pytest.raises(RequestInvalid):
            parse_job_id(bad)


@pytest.mark.parametrize("field, value", [
    ("name", "a\x00b"), ("account", "\x00"), ("standard_output", "o\x00"), ("current_working_directory", "/jobs/\x00"),
    ("time_limit", "99999999999999999999999"), ("time_limit", "٣٠"), ("memory_per_node", "0"),
])
def test_what_no_later_stage_could_take_is_refused_here(field, value):
    errors = errors_of(body(**{field: value}))
    assert any(e["loc"][2] == field for e in errors), errors


@pytest.mark.parametrize("environment", [{"A=B": "x"}, {"": "x"}, {"1X": "x"}, {"V": "a\x00b"}])
def test_environment_names_and_values_the_os_would_refuse(environment):
    (error,) = errors_of(body(environment=environment))
    assert error["loc"] == ["body", "job", "environment", next(iter(environment))]


def test_deeply_nested_json_is_a_422_not_a_crash():
    with pytest.raises(RequestInvalid) as caught:
        decode_submit(b"[" * 100_000)
    assert caught.value.errors[0]["type"] == "json_invalid"


def test_listing_parameters_refuse_what_the_database_cannot_take():
    for params in ({"account": "a\x00b"}, {"partition": "\x00"}, {"limit": "0"}, {"state": "DONE"}):
        with pytest.raises(RequestInvalid):
            parse_listing(params)
    assert parse_listing({"account": "ok", "limit": "5"}).limit == 5
