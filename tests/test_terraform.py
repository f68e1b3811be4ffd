"""The deployment in terraform/, read with python-hcl2 and checked against the code it
deploys: every function deployed with its entry point, its own service account and
exactly the settings its adapter reads; nothing public but what must be; no primitive
roles; checkov passes (every skipped check with its reason)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from piecewise.config import Config

ROOT = Path(__file__).resolve().parents[1]
TERRAFORM = ROOT / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/main.py"))
OPTIONS = hcl2.SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")


def _load() -> dict[str, Any]:
    """Every .tf file merged: resources and data by type and name, locals, variables."""
    out: dict[str, Any] = {"resource": {}, "data": {}, "locals": {}, "variable": {}}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as f:
            doc = hcl2.load(f, serialization_options=OPTIONS)
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        key = f"{rtype}.{name}"
                        assert key not in out[kind], f"{key} defined twice"
                        out[kind][key] = body
        for block in doc.get("locals", []):
            out["locals"].update(block)
        for block in doc.get("variable", []):
            out["variable"].update(block)
    return out


TF = _load()


def _resources(rtype: str) -> dict[str, dict]:
    return {k: v for k, v in TF["resource"].items() if k.startswith(rtype + ".")}


def _one(value: Any) -> Any:
    """A nested block as hcl2 gives it: a list of one dict."""
    assert isinstance(value, list) and len(value) == 1, value
    return value[0]


def _ref(expression: str) -> str:
    match = re.fullmatch(r"\$\{(.+)\}", expression)
    assert match, f"not a reference: {expression}"
    return match.group(1)


def _walk(value: Any, path: str = ""):
    """(path, string) for every string in a parsed block."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(k, path)
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


# --- what the adapters read --------------------------------------------------------------


def _entry_points(name: str) -> set[str]:
    """The functions_framework entry points of functions/{name}/main.py."""
    tree = ast.parse((ROOT / "functions" / name / "main.py").read_text())
    found = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(ast.unparse(d).startswith("functions_framework.") for d in node.decorator_list)
    }
    assert found, f"functions/{name}/main.py has no functions_framework entry point"
    return found


def _adapter_settings(name: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Literal variable names, and config fields naming variables, that main.py reads."""
    tree = ast.parse((ROOT / "functions" / name / "main.py").read_text())
    literal: set[str] = set()
    from_config: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = ast.unparse(node.func)
        if func not in ("os.environ.get", "os.getenv", "os.environ.__getitem__"):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant):
            literal.add(arg.value)
        else:
            parts = ast.unparse(arg).split(".")  # config.geoip.license_key_env
            assert len(parts) == 3, f"functions/{name}: cannot follow {ast.unparse(arg)}"
            from_config.add((parts[1], parts[2]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            literal.add(ast.literal_eval(node.slice))
    return literal, from_config


def _config_env_local(table: str, field: str) -> str:
    """The local that holds the variable name `[table] field` chooses; its fallback must
    be the config's default."""
    default = Config.model_fields[table].default_factory().__getattribute__(field)
    for local, expression in TF["locals"].items():
        if isinstance(expression, str) and f"\\\\s*{field}\\\\s*=" in expression:
            assert expression.endswith(f'"{default}")}}'), (
                f"local.{local} must fall back to {table}.{field}'s default {default!r}"
            )
            return local
    raise AssertionError(f"no local reads {table}.{field} from the config file")


def test_every_function_is_deployed_with_its_entry_point() -> None:
    declared = TF["locals"]["functions"]
    assert sorted({f["source"] for f in declared.values()}) == FUNCTIONS
    assert TF["locals"]["sources"] == "${toset([for f in local.functions : f.source])}"
    for name in FUNCTIONS:  # each folder's own function is named after it
        assert declared[name]["source"] == name
    # Every entry point of every folder is deployed, once.
    deployed = sorted((f["source"], f["entry_point"]) for f in declared.values())
    assert deployed == sorted((n, e) for n in FUNCTIONS for e in _entry_points(n))
    (key, function), *others = _resources("google_cloudfunctions2_function").items()
    assert not others, "one for_each resource deploys every function"
    assert function["for_each"] == "${local.functions}"
    build = _one(function["build_config"])
    assert build["entry_point"] == "${each.value.entry_point}"
    assert re.fullmatch(r"python3(11|12)", build["runtime"])
    source = _one(_one(build["source"])["storage_source"])
    assert source["bucket"] == "${google_storage_bucket.private.name}"
    assert source["object"] == "${google_storage_bucket_object.source[each.value.source].name}"


def test_every_function_runs_as_its_own_service_account() -> None:
    function = TF["resource"]["google_cloudfunctions2_function.function"]
    service = _one(function["service_config"])
    assert service["service_account_email"] == "${google_service_account.function[each.key].email}"
    account = TF["resource"]["google_service_account.function"]
    assert account["for_each"] == "${local.functions}"
    assert "${each.key}" in account["account_id"]
    # No other resource reuses a function's account as its own identity.
    for key, body in TF["resource"].items():
        if key.startswith("google_cloudfunctions2_function"):
            continue
        for path, text in _walk(body):
            if "google_service_account.function" in text:
                assert path.endswith(".member"), f"{key}{path} uses a function's account"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_function_gets_exactly_the_settings_its_adapter_reads(name: str) -> None:
    literal, from_config = _adapter_settings(name)
    env = TF["locals"]["env"][name]
    secret_env = TF["locals"]["secret_env"][name]
    given = set(env) | {_ref(k) for k in secret_env}
    wanted = set(literal) | {
        f"(local.{_config_env_local(table, field)})" for table, field in from_config
    }
    assert given == wanted, (
        f"{name}: Terraform gives {sorted(given)}, main.py reads {sorted(wanted)}"
    )
    # The folder's other functions get some of what its main.py reads, no more.
    for other, function in TF["locals"]["functions"].items():
        if function["source"] == name and other != name:
            theirs = set(TF["locals"]["env"][other]) | {
                _ref(k) for k in TF["locals"]["secret_env"][other]
            }
            assert theirs <= wanted, f"{other}: {sorted(theirs - wanted)} are never read"
    assert env.get("PIECEWISE_CONFIG", "piecewise.toml") == "piecewise.toml"
    # Secrets only through Secret Manager: a config-named variable is never a plain value.
    for table, field in from_config:
        assert f"${{(local.{_config_env_local(table, field)})}}" in secret_env
        assert _ref(secret_env[f"${{(local.{_config_env_local(table, field)})}}"]).startswith(
            "google_secret_manager_secret."
        )
    service = _one(TF["resource"]["google_cloudfunctions2_function.function"]["service_config"])
    assert service["environment_variables"] == "${local.env[each.key]}"
    dynamic = _one(service["dynamic"])["secret_environment_variables"]
    assert dynamic["for_each"] == "${local.secret_env[each.key]}"
    assert _one(dynamic["content"])["version"] == "latest"


def test_the_topic_reaches_aggregate() -> None:
    assert TF["locals"]["env"]["ingest"]["PIECEWISE_TOPIC"] == "${google_pubsub_topic.ingested.id}"
    function = TF["resource"]["google_cloudfunctions2_function.function"]
    dynamic = _one(function["dynamic"])["event_trigger"]
    trigger = _one(dynamic["content"])
    assert trigger["pubsub_topic"] == "${event_trigger.value}"
    assert dynamic["for_each"] == (
        "${contains(keys(local.triggers), each.key) ? [local.triggers[each.key]] : []}"
    )
    assert TF["locals"]["triggers"] == {
        "aggregate": "${google_pubsub_topic.ingested.id}",
        "ingest-date": "${google_pubsub_topic.dates.id}",
    }
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"  # a failed event runs again
    service = _one(function["service_config"])
    assert service["ingress_settings"] == (
        '${contains(keys(local.triggers), each.key) ? "ALLOW_INTERNAL_ONLY" : "ALLOW_ALL"}'
    )


def test_a_backfill_reaches_the_date_worker() -> None:
    """ingest publishes one message per date to the dates topic; ingest-date, deployed
    from the ingest folder, is triggered by it and announces batches to aggregate."""
    topic = TF["resource"]["google_pubsub_topic.dates"]
    assert topic["name"] == "${var.prefix}-ingest-dates"
    assert TF["locals"]["env"]["ingest"]["PIECEWISE_DATES_TOPIC"] == (
        "${google_pubsub_topic.dates.id}"
    )
    worker = TF["locals"]["functions"]["ingest-date"]
    assert worker == {"source": "ingest", "entry_point": "ingest_date", "public": False}
    assert TF["locals"]["env"]["ingest-date"] == {
        "PIECEWISE_CONFIG": "piecewise.toml",
        "PIECEWISE_TOPIC": "${google_pubsub_topic.ingested.id}",
    }
    assert "ingest-date" in TF["variable"]["function_sizes"]["default"]


def test_each_source_object_is_named_by_its_archive_hash() -> None:
    archive = TF["data"]["archive_file.source"]
    assert archive["for_each"] == "${local.sources}"  # one upload per folder
    assert TF["resource"]["google_storage_bucket_object.source"]["for_each"] == "${local.sources}"
    assert archive["source_dir"] == "${var.build_dir}/${each.key}"
    assert archive["output_file_mode"] == "0644"
    source = TF["resource"]["google_storage_bucket_object.source"]
    assert re.search(
        r"\$\{data\.archive_file\.source\[each\.key\]\.output_(md5|sha|sha256|base64sha256)\}",
        source["name"],
    ), source["name"]
    assert source["source"] == "${data.archive_file.source[each.key].output_path}"
    assert source["bucket"] == "${google_storage_bucket.private.name}"


def test_no_primitive_roles() -> None:
    for key, body in TF["resource"].items():
        for path, text in _walk(body):
            assert not re.search(r"roles/(owner|editor|viewer)\b", text), f"{key}{path}: {text}"


def test_only_the_api_the_survey_and_the_public_bucket_are_public() -> None:
    public = []
    for key, body in TF["resource"].items():
        for path, text in _walk(body):
            if any(member in text for member in PUBLIC_MEMBERS):
                public.append((key, path, text, body.get("role")))
    assert sorted(public) == sorted(
        [
            (
                "google_storage_bucket_iam_member.public_read",
                ".member",
                "allUsers",
                "roles/storage.objectViewer",
            ),
            (
                "google_cloud_run_service_iam_member.public_invokes",
                ".member",
                "allUsers",
                "roles/run.invoker",
            ),
        ]
    )
    assert TF["resource"]["google_storage_bucket_iam_member.public_read"]["bucket"] == (
        "${google_storage_bucket.public.name}"
    )
    invokers = TF["resource"]["google_cloud_run_service_iam_member.public_invokes"]
    assert "if f.public" in invokers["for_each"]
    assert {n for n, f in TF["locals"]["functions"].items() if f["public"]} == {"api", "survey"}
    # The others are invoked by their own callers only.
    scheduler = TF["resource"]["google_cloud_run_service_iam_member.scheduler_invokes_ingest"]
    assert scheduler["member"] == "${google_service_account.scheduler.member}"
    assert '"ingest"' in scheduler["service"]
    trigger = TF["resource"]["google_cloud_run_service_iam_member.trigger_invokes_aggregate"]
    assert trigger["member"] == "${google_service_account.trigger.member}"
    assert '"aggregate"' in trigger["service"]
    worker = TF["resource"]["google_cloud_run_service_iam_member.trigger_invokes_ingest_date"]
    assert worker["member"] == "${google_service_account.trigger.member}"
    assert '"ingest-date"' in worker["service"]
    job = _one(TF["resource"]["google_cloud_scheduler_job.ingest"]["http_target"])
    oidc = _one(job["oidc_token"])
    assert oidc["service_account_email"] == "${google_service_account.scheduler.email}"


def test_the_private_bucket_is_private() -> None:
    bucket = TF["resource"]["google_storage_bucket.private"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    public = TF["resource"]["google_storage_bucket.public"]
    assert public["uniform_bucket_level_access"] is True
    for key, body in TF["resource"].items():
        if body.get("bucket") == "${google_storage_bucket.private.name}" and "member" in body:
            assert body["member"].startswith("${google_service_account."), key


def test_the_public_bucket_serves_range_requests_across_origins() -> None:
    cors = _one(TF["resource"]["google_storage_bucket.public"]["cors"])
    assert cors["origin"] == "${var.site_origins}"
    assert set(cors["method"]) == {"GET", "HEAD"}
    for header in ("Range", "ETag", "Content-Range", "Content-Length"):
        assert header in cors["response_header"]


def test_each_principal_has_only_its_roles() -> None:
    grants = set()
    for key, body in TF["resource"].items():
        if key.split(".")[0].endswith("_iam_member") and "google_service_account" in str(
            body.get("member")
        ):
            member = re.sub(
                r"\$\{google_service_account\.(\w+)(\[\"([\w-]+)\"\])?\.member\}",
                lambda m: m.group(3) or m.group(1),
                body["member"],
            )
            target = next(
                (
                    body[k]
                    for k in ("bucket", "topic", "secret_id", "dataset_id", "service")
                    if k in body
                ),
                "project",
            )
            role = body["role"] if "for_each" not in body else body["for_each"]
            grants.add((member, role, re.sub(r"\$\{|\}", "", target)))
    by_member: dict[str, set] = {}
    for member, role, target in grants:
        by_member.setdefault(member, set()).add((role, target))
    assert by_member["ingest"] == {
        ("roles/bigquery.jobUser", "project"),
        ("roles/storage.objectUser", "google_storage_bucket.private.name"),
        ("roles/pubsub.publisher", "google_pubsub_topic.ingested.id"),
        ("roles/pubsub.publisher", "google_pubsub_topic.dates.id"),
        (
            "roles/secretmanager.secretAccessor",
            "google_secret_manager_secret.maxmind_license_key.id",
        ),
    }
    assert by_member["ingest-date"] == {
        ("roles/bigquery.jobUser", "project"),
        ("roles/storage.objectUser", "google_storage_bucket.private.name"),
        ("roles/pubsub.publisher", "google_pubsub_topic.ingested.id"),
    }
    assert by_member["aggregate"] == {
        ("roles/bigquery.jobUser", "project"),
        ("roles/storage.objectUser", "google_storage_bucket.private.name"),
        ("roles/storage.objectUser", "google_storage_bucket.public.name"),
        ("roles/bigquery.dataEditor", "google_bigquery_dataset.scale.dataset_id"),
    }
    assert by_member["api"] == {("roles/storage.objectViewer", "google_storage_bucket.public.name")}
    assert by_member["survey"] == {
        ("roles/datastore.user", "project"),
        ("roles/secretmanager.secretAccessor", "google_secret_manager_secret.survey_salt.id"),
    }


def test_terraform_is_formatted() -> None:
    """`terraform fmt -check` when the binary is here (it needs no providers)."""
    import shutil

    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", str(TERRAFORM)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": "/dev/null", "HOME": "/tmp"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes() -> None:
    assert CHECKOV.exists(), "checkov's virtualenv is missing: run `make checkov-venv`"
    result = subprocess.run(
        [
            str(CHECKOV),
            "--quiet",
            "--compact",
            "--skip-download",
            "--framework",
            "terraform",
            "--directory",
            str(TERRAFORM),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_every_checkov_skip_gives_a_reason() -> None:
    for path in sorted(TERRAFORM.glob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:skip" in line:
                assert re.search(r"#checkov:skip=CKV2?_[A-Z0-9_]+:\s*\S.{15,}", line), (
                    f"{path.name}:{number}: give the reason after the check id"
                )
