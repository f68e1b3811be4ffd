"""The deployment in terraform/, read with python-hcl2 and checked against the code it
deploys: every function deployed with its entry point, its own service account and
exactly the settings its adapter reads; nothing public but what must be; no primitive
roles; each account exactly its grants (aggregate writes only the public data's folder,
which Terraform reads from the config; only the build account reads the function
sources, kept in their own bucket); checkov passes (every skipped check with its
reason)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import hcl2
import pytest

from piecewise.core.config import Config
from piecewise.web.survey.store import RATE_EXPIRY, RATE_SUFFIX

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("stage", ROOT / "infra" / "stage.py")
stage = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("stage", stage)
_spec.loader.exec_module(stage)
TERRAFORM = ROOT / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/main.py"))
OPTIONS = hcl2.SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
# The variables functions-framework reads to run gunicorn (the api function's).
GUNICORN_SETTINGS = {"WORKERS", "THREADS"}
# The C library's malloc settings (the api function's: its threads' memory).
ALLOCATOR_SETTINGS = {"MALLOC_ARENA_MAX"}
# The variables Cloud Run sets in every instance (its container contract).
CLOUD_RUN_SETTINGS = {"K_SERVICE", "K_REVISION", "K_CONFIGURATION", "PORT"}
# The accounts that run code at runtime: every function's, the scheduler's, the trigger's.
RUNTIME_ACCOUNTS = {"scheduler", "trigger"}  # and every function's, added below
# aggregate's grants on the public bucket: objects under the data folder; lists of it.
DATA_CONDITION = (
    "resource.name.startsWith('projects/_/buckets/${google_storage_bucket.public.name}"
    "/objects/${local.public_data_prefix}/')"
)
LIST_CONDITION = (
    "api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
    ".startsWith('${local.public_data_prefix}/')"
)
# The build account's read of Cloud Functions' copies of the sources.
COPIES_CONDITION = (
    "resource.name.startsWith('projects/_/buckets/${local.function_source_copies}/objects/')"
)
# Terraform without a user's CLI configuration (no plugin cache, no credentials).
TERRAFORM_ENV = {"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": "/dev/null", "HOME": "/tmp"}


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
RUNTIME_ACCOUNTS |= set(TF["locals"]["functions"])


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


def _grants() -> list[tuple[str, str, str, str | None, str]]:
    """(member, role, target, condition expression, resource) of every IAM member
    resource; a service account is named by its key (`aggregate`, `build`), a target by
    its reference without `${}` or "project"."""
    out = []
    for key, body in TF["resource"].items():
        if not key.split(".")[0].endswith("_iam_member"):
            continue
        member = re.sub(
            r"\$\{google_service_account\.(\w+)(\[\"([\w-]+)\"\])?\.member\}",
            lambda m: m.group(3) or m.group(1),
            body["member"],
        )
        target = next(
            (
                body[k]
                for k in ("bucket", "topic", "secret_id", "dataset_id", "service", "repository")
                if k in body
            ),
            "project",
        )
        role = body["role"] if "for_each" not in body else body["for_each"]
        condition = _one(body["condition"])["expression"] if "condition" in body else None
        out.append((member, role, re.sub(r"\$\{|\}", "", target), condition, key))
    return out


def _local_source(name: str) -> str:
    """The expression of local `name` as terraform/main.tf writes it (on one line)."""
    assert name in TF["locals"], name
    for line in (TERRAFORM / "main.tf").read_text().splitlines():
        match = re.fullmatch(rf"\s*{name}\s*=\s*(.+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"local.{name} is not on one line of main.tf")


def _evaluate(config_text: str, *expressions: str) -> list[Any]:
    """The values of `expressions` as Terraform computes them (`terraform console`, no
    provider needed) with the locals that read the staged config's settings, for a
    config file holding `config_text` staged as `make build` stages it (deploy.json),
    and the default prefix, project piecewise / my-project."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine")
    names = (
        "deploy",
        "public_bucket",
        "public_store",
        "public_data_prefix",
        "survey_collection",
        "geoip_license_key_env",
        "survey_salt_env",
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "piecewise.toml")
        config.write_text(config_text)
        deploy = stage.deploy_settings(config, check_files=False)
        Path(tmp, "deploy.json").write_text(json.dumps(deploy))
        Path(tmp, "main.tf").write_text(
            'variable "prefix" {\n  default = "piecewise"\n}\n'
            'variable "project" {\n  default = "my-project"\n}\n'
            'variable "build_dir" {\n  default = "."\n}\n'
            "locals {\n" + "".join(f"  {name} = {_local_source(name)}\n" for name in names) + "}\n"
        )
        return _console(terraform, Path(tmp), expressions)


def _console(terraform: str, folder: Path, expressions: Iterable[str]) -> list[Any]:
    """The values of `expressions` in the Terraform module in `folder`."""
    result = subprocess.run(
        [terraform, "console"],
        input=f"jsonencode([{', '.join(expressions)}])\n",
        cwd=folder,
        capture_output=True,
        text=True,
        env=TERRAFORM_ENV,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(json.loads(result.stdout.strip()))


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
    """The local that holds the variable name `[table] field` chooses, as the staged
    settings give it (infra/stage.py's deploy.json)."""
    for local, expression in TF["locals"].items():
        if expression == f"${{local.deploy.{field}}}":
            return local
    raise AssertionError(f"no local reads {table}.{field} from the staged settings")


def _secret_env(name: str) -> dict[str, str]:
    """`local.secret_env[name]`: a map, or a map kept only if a staged setting is true
    (`{for k, v in {...} : k => v if local.deploy.X}`), as the map it keeps."""
    value = TF["locals"]["secret_env"][name]
    if isinstance(value, dict):
        return value
    match = re.fullmatch(
        r"\$\{\{for k, v in \{(\(local\.\w+\)) = ([\w.]+)\} : k => v if local\.deploy\.\w+\}\}",
        value,
    )
    assert match, f"secret_env[{name}] is neither a map nor a map kept on a setting: {value}"
    return {f"${{{match.group(1)}}}": f"${{{match.group(2)}}}"}


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
    assert source["bucket"] == "${google_storage_bucket.sources.name}"
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
    secret_env = _secret_env(name)
    # What functions-framework reads to run gunicorn is the framework's, not main.py's;
    # the allocator's, the C library's: both the api function's only.
    runtime = GUNICORN_SETTINGS | ALLOCATOR_SETTINGS if name == "api" else set()
    given = (set(env) - runtime) | {_ref(k) for k in secret_env}
    wanted = (set(literal) - CLOUD_RUN_SETTINGS) | {
        f"(local.{_config_env_local(table, field)})" for table, field in from_config
    }
    assert given == wanted, (
        f"{name}: Terraform gives {sorted(given)}, main.py reads {sorted(wanted)}"
    )
    # The folder's other functions get some of what its main.py reads, no more.
    for other, function in TF["locals"]["functions"].items():
        if function["source"] == name and other != name:
            theirs = set(TF["locals"]["env"][other]) | {_ref(k) for k in _secret_env(other)}
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


def _functions_expression(name: str) -> str:
    """The expression of `name = ...` on one line of terraform/functions.tf."""
    found = [
        m.group(1)
        for line in (TERRAFORM / "functions.tf").read_text().splitlines()
        if (m := re.fullmatch(rf"\s*{name}\s*=\s*(.+)", line))
    ]
    assert len(found) == 1, f"{name} is not on exactly one line of functions.tf"
    return found[0]


def _gunicorn_settings(cpu: str, concurrency: int) -> tuple[str, str]:
    """WORKERS and THREADS as Terraform computes them for an api function of this size."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "main.tf").write_text(
            'variable "function_sizes" {\n'
            f'  default = {{ api = {{ cpu = "{cpu}", concurrency = {concurrency} }} }}\n'
            "}\n"
            "locals {\n"
            f"  api_workers = {_functions_expression('api_workers')}\n"
            f"  threads = {_functions_expression('THREADS')}\n"
            "}\n"
        )
        workers, threads = _console(terraform, Path(tmp), ["local.api_workers", "local.threads"])
    return workers, threads


def test_the_api_runs_a_worker_per_cpu_as_the_bench_runs_it() -> None:
    """One gunicorn worker per whole CPU (at least one), threads enough for the
    instance's concurrency; the bench's API server takes the same from the same size."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from api_load import deployed_env, deployed_size, gunicorn_env
    finally:
        sys.path.remove(str(ROOT / "bench"))
    env = TF["locals"]["env"]["api"]
    assert env["WORKERS"] == "${local.api_workers}"
    size = TF["variable"]["function_sizes"]["default"]["api"]
    assert deployed_size() == (size["cpu"], size["concurrency"])
    for cpu, concurrency, workers, threads in [
        ("1", 16, "1", "16"),
        ("2", 16, "2", "8"),
        ("4", 10, "4", "3"),
        ("0.5", 8, "1", "8"),
        ("2.5", 80, "2", "40"),
    ]:
        assert _gunicorn_settings(cpu, concurrency) == (workers, threads)
        assert gunicorn_env(cpu, concurrency) == {"WORKERS": workers, "THREADS": threads}
    workers, threads = _gunicorn_settings(size["cpu"], size["concurrency"])
    # Two malloc arenas a worker, whatever its threads (the memory's growth: the bench).
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert deployed_env() == {"WORKERS": workers, "THREADS": threads, "MALLOC_ARENA_MAX": "2"}
    assert int(workers) >= 2, "the API's two workers: docs/benchmarks.md, Statistics API"
    # Each worker holds its own caches: the memory holds them all at their budgets, and
    # half a GiB more per worker for the rest of the process (its RSS is ~700 MiB in the
    # bench, with the caches not full).
    api = Config.model_fields["api"].default_factory()
    per_worker = api.data_cache_mb + api.response_cache_mb + 512
    memory = size["memory"]
    assert memory.endswith("Gi") and int(memory[:-2]) * 1024 >= int(workers) * per_worker


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
    assert source["bucket"] == "${google_storage_bucket.sources.name}"


def test_the_public_survey_may_write_answers_but_never_list_them() -> None:
    """The survey function faces the internet: its role creates, updates and gets a
    document by its id (what the Firestore store calls: create, set with an increment,
    get after a create found its key taken), and holds no list, query or delete."""
    role = TF["resource"]["google_project_iam_custom_role.survey_writer"]
    assert sorted(role["permissions"]) == [
        "datastore.databases.getMetadata",
        "datastore.entities.create",
        "datastore.entities.get",
        "datastore.entities.update",
    ]
    source = (ROOT / "src" / "piecewise" / "web" / "survey" / "store.py").read_text()
    firestore = source[source.index("class FirestoreSurveyStore") :]
    put = firestore[firestore.index("    def put(") : firestore.index("    def records(")]
    calls = set(re.findall(r"\.(create|set|get|update|delete|stream|list_documents)\(", put))
    assert calls == {"create", "get", "set"}, calls


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
    # Terraform puts nothing in it: the function sources have their own bucket.
    for key, body in _resources("google_storage_bucket_object").items():
        assert body["bucket"] == "${google_storage_bucket.sources.name}", key


def test_the_sources_bucket_is_private_and_only_the_build_reads_it() -> None:
    bucket = TF["resource"]["google_storage_bucket.sources"]
    assert bucket["name"] == "${local.sources_bucket}"
    assert TF["locals"]["sources_bucket"] == "${var.prefix}-sources-${var.project}"
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert _one(bucket["versioning"])["enabled"] is True
    rule = _one(bucket["lifecycle_rule"])
    assert _one(rule["action"])["type"] == "Delete"
    assert _one(rule["condition"])["with_state"] == "ARCHIVED"  # old versions only
    # The sources, as uploaded and as Cloud Functions copies them: the build account
    # reads them, and no one else has a grant on either.
    on_sources = [
        g
        for g in _grants()
        if g[2] == "google_storage_bucket.sources.name"
        or "function_source_copies" in g[2] + str(g[3])
    ]
    assert sorted(g[:4] for g in on_sources) == sorted(
        [
            ("build", "roles/storage.objectViewer", "google_storage_bucket.sources.name", None),
            ("build", "roles/storage.objectViewer", "project", COPIES_CONDITION),
        ]
    )
    for key, body in TF["resource"].items():  # nor does anything else use the copies
        if not key.split(".")[0].endswith("_iam_member"):
            for path, text in _walk(body):
                assert "function_source_copies" not in text, f"{key}{path}"
    # No runtime account reaches any bucket through the project.
    for member, role, target, _condition, key in _grants():
        if member in RUNTIME_ACCOUNTS and target == "project":
            assert not role.startswith("roles/storage."), key


def test_the_public_bucket_serves_range_requests_across_origins() -> None:
    cors = _one(TF["resource"]["google_storage_bucket.public"]["cors"])
    assert cors["origin"] == "${var.site_origins}"
    assert set(cors["method"]) == {"GET", "HEAD"}
    for header in ("Range", "ETag", "Content-Range", "Content-Length"):
        assert header in cors["response_header"]


def test_each_principal_has_only_its_roles() -> None:
    by_member: dict[str, set] = {}
    for member, role, target, condition, _key in _grants():
        if member in PUBLIC_MEMBERS:
            continue  # test_only_the_api_the_survey_and_the_public_bucket_are_public
        by_member.setdefault(member, set()).add((role, target, condition))
    private = "google_storage_bucket.private.name"
    public = "google_storage_bucket.public.name"
    assert by_member == {
        "ingest": {
            ("roles/bigquery.jobUser", "project", None),
            ("roles/bigquery.readSessionUser", "project", None),
            ("roles/storage.objectUser", private, None),
            ("roles/pubsub.publisher", "google_pubsub_topic.ingested.id", None),
            ("roles/pubsub.publisher", "google_pubsub_topic.dates.id", None),
            (
                "roles/secretmanager.secretAccessor",
                "google_secret_manager_secret.maxmind_license_key.id",
                None,
            ),
        },
        "ingest-date": {
            ("roles/bigquery.jobUser", "project", None),
            ("roles/bigquery.readSessionUser", "project", None),
            ("roles/storage.objectUser", private, None),
            ("roles/pubsub.publisher", "google_pubsub_topic.ingested.id", None),
        },
        "aggregate": {
            ("roles/bigquery.jobUser", "project", None),
            ("roles/storage.objectUser", private, None),
            ("roles/storage.objectUser", public, DATA_CONDITION),
            ("roles/storage.objectViewer", public, LIST_CONDITION),
            ("roles/bigquery.dataEditor", "google_bigquery_dataset.scale.dataset_id", None),
            ("roles/datastore.viewer", "project", None),  # the survey's responses, read
        },
        "api": {("roles/storage.objectViewer", public, None)},
        "survey": {
            ("${google_project_iam_custom_role.survey_writer.id}", "project", None),
            (
                "roles/secretmanager.secretAccessor",
                "google_secret_manager_secret.survey_salt.id",
                None,
            ),
        },
        "build": {
            ("roles/logging.logWriter", "project", None),
            (
                "roles/artifactregistry.writer",
                "google_artifact_registry_repository.functions.name",
                None,
            ),
            ("roles/storage.objectViewer", "google_storage_bucket.sources.name", None),
            ("roles/storage.objectViewer", "project", COPIES_CONDITION),
        },
        "scheduler": {
            (
                "roles/run.invoker",
                'google_cloudfunctions2_function.function["ingest"].name',
                None,
            )
        },
        "trigger": {
            (
                "roles/run.invoker",
                'google_cloudfunctions2_function.function["aggregate"].name',
                None,
            ),
            (
                "roles/run.invoker",
                'google_cloudfunctions2_function.function["ingest-date"].name',
                None,
            ),
        },
    }


def test_only_the_data_folder_of_the_public_bucket_is_writable() -> None:
    """No account may write the site's pages: every grant on the public bucket that
    can write is held to the data folder, and that folder is the config's public store."""
    readers = {"roles/storage.objectViewer"}
    on_public = [g for g in _grants() if g[2] == "google_storage_bucket.public.name"]
    for _member, role, _target, condition, key in on_public:
        if role not in readers:
            assert condition == DATA_CONDITION, f"{key}: {role} on the whole public bucket"
    writers = {g[0] for g in on_public if g[1] not in readers}
    assert writers == {"aggregate"}
    grant = TF["resource"]["google_storage_bucket_iam_member.aggregate_public_data"]
    assert _one(grant["condition"])["expression"] == DATA_CONDITION
    listing = TF["resource"]["google_storage_bucket_iam_member.aggregate_public_list"]
    assert _one(listing["condition"])["expression"] == LIST_CONDITION
    # Uniform bucket-level access is what lets a bucket's IAM carry conditions.
    assert TF["resource"]["google_storage_bucket.public"]["uniform_bucket_level_access"] is True
    # A config whose public store is not a folder of the public bucket is refused.
    check = _one(_one(grant["lifecycle"])["precondition"])
    assert "local.public_data_prefix" in check["condition"]
    # The site is pointed at the same folder.
    outputs = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as f:
            for block in hcl2.load(f, serialization_options=OPTIONS).get("output", []):
                outputs.update(block)
    assert outputs["data_url"]["value"] == "${local.public_base}/${local.public_data_prefix}/"
    assert TF["locals"]["public_data_prefix"].count("local.public_store") == 2


def _deploy_config() -> str:
    """The cloud config docs/deploy.md shows (its first TOML block)."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    return re.search(r"```toml\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize(
    ("lines", "prefix"),
    [
        (None, "data"),  # docs/deploy.md's config, as it is
        ('public = "gs://piecewise-public-my-project/data"', "data"),
        ("public = 'gs://piecewise-public-my-project/data/'", "data"),
        ('  public="gs://piecewise-public-my-project/wa/data"', "wa/data"),
        (
            '# public = "gs://elsewhere/old"\npublic = "gs://piecewise-public-my-project/data"',
            "data",
        ),
        ('public = "gs://piecewise-public-my-project"', ""),
        ('public = "gs://piecewise-public-my-project/"', ""),
        ('public = "gs://piecewise-public-my-project-2/data"', ""),
        ('public = "gs://elsewhere/data"', ""),
        ('public = "file://var/public"', ""),
    ],
)
def test_the_data_folder_is_read_from_the_config(lines: str | None, prefix: str) -> None:
    """Terraform reads the public store the config names, as the config does, and the
    grant's folder from it; anything but a folder of the public bucket fails the plan."""
    config = _deploy_config()
    if lines is not None:
        config, n = re.subn(r"(?m)^public = .*$", lambda _m: lines, config)
        assert n == 1
    expected_store = tomllib.loads(config)["stores"]["public"]
    precondition = _one(
        _one(TF["resource"]["google_storage_bucket_iam_member.aggregate_public_data"]["lifecycle"])[
            "precondition"
        ]
    )["condition"]
    store, folder, accepted = _evaluate(
        config, "local.public_store", "local.public_data_prefix", _ref(precondition)
    )
    assert store == expected_store  # not the private store's line, nor a comment
    assert folder == prefix
    assert accepted is bool(prefix)


@pytest.mark.parametrize(
    ("store", "collection"),
    [
        ('store = "firestore://survey-responses"', "survey-responses"),
        ("store = 'firestore://responses'  # the survey's answers", "responses"),
        ('store = "sqlite://var/survey.sqlite3"   # or "firestore://other"', ""),
        ('# store = "firestore://commented"', ""),
    ],
)
def test_the_survey_rate_counters_expire_in_the_collection_the_config_names(
    store: str, collection: str
) -> None:
    """Firestore deletes the rate counters of ended windows (a TTL on `expires_at` of
    COLLECTION-rate, as the store writes them), for the collection the config names."""
    config = _deploy_config()
    config, n = re.subn(r"(?m)^store = .*$", lambda _m: store, config)
    assert n == 1
    assert _evaluate(config, "local.survey_collection") == [collection]
    field = TF["resource"]["google_firestore_field.survey_rate_expiry"]
    assert field["count"] == '${local.survey_collection == "" ? 0 : 1}'
    assert field["collection"] == "${local.survey_collection}" + RATE_SUFFIX
    assert field["field"] == RATE_EXPIRY
    assert field["ttl_config"] == [{}]
    assert field["database"] == "${google_firestore_database.survey.name}"


def test_the_secrets_go_in_the_variables_the_config_names() -> None:
    """`license_key_env = 'X'` is TOML too: a line match for double quotes read the
    defaults, and the functions got their secrets under names they never read."""
    config = _deploy_config().replace(
        'account_id = "123456"', "account_id = '123456'\nlicense_key_env = 'COUNTY_MM_KEY'"
    )
    config = config.replace(
        'store = "firestore://responses"', "store = 'firestore://responses'\nsalt_env = 'SALT'"
    )
    assert _evaluate(config, "local.geoip_license_key_env", "local.survey_salt_env") == [
        "COUNTY_MM_KEY",
        "SALT",
    ]


@pytest.mark.parametrize(
    ("source", "needed"),
    [
        (None, True),  # docs/deploy.md's: MaxMind, with the account ID
        ('source_url = "gs://my-bucket/GeoLite2-ASN.tar.gz"', False),
        ('source_url = "https://example.org/asn.tar.gz?k={license_key}"', True),
    ],
)
def test_ingest_names_the_maxmind_secret_only_where_the_config_uses_it(
    source: str | None, needed: bool
) -> None:
    """A secret a function names must have a version or the function does not start:
    ingest names the MaxMind key only when its download needs one."""
    config = _deploy_config()
    if source is not None:
        config = re.sub(r"(?m)^source_url = .*\n", source + "\n", config)
        config = re.sub(r"(?m)^account_id = .*\n", "", config)
    assert _evaluate(config, "local.deploy.license_key_needed") == [needed]
    ingest = TF["locals"]["secret_env"]["ingest"]
    assert re.search(r"if local\.deploy\.license_key_needed\}\}$", ingest)


def _precondition(resource: str, needle: str) -> str:
    """The condition of `resource`'s precondition that mentions `needle`."""
    conditions = [
        c["condition"]
        for c in _one(TF["resource"][resource]["lifecycle"])["precondition"]
        if needle in c["condition"]
    ]
    assert len(conditions) == 1, conditions
    return _ref(conditions[0])


@pytest.mark.parametrize(
    ("store", "accepted"),
    [('"firestore://responses"', True), ('"sqlite://var/survey.sqlite3"', False)],
)
def test_a_plan_refuses_a_survey_kept_on_an_instances_disk(store: str, accepted: bool) -> None:
    """In the cloud a SQLite file is on one instance's disk: the answers were lost when it
    stopped, split between instances, never seen by aggregate."""
    config = re.sub(r"(?m)^store = .*$", f"store = {store}", _deploy_config())
    condition = _precondition("google_cloudfunctions2_function.function", "survey_collection")
    survey, api = (condition.replace("each.key", f'"{name}"') for name in ("survey", "api"))
    assert _evaluate(config, survey, api) == [accepted, True]


@pytest.mark.parametrize(
    ("aggregation", "dataset", "location", "accepted"),
    [
        ("", "piecewise_scale", "US", True),  # the local engine: the default dataset
        ('engine = "bigquery"\ndataset = "wa_cells"\nlocation = "EU"', "wa_cells", "EU", True),
        ('engine = "bigquery"\ndataset = "wa_cells"', "wa_cells", "US", True),
        ('engine = "bigquery"\ndataset = "x"\nproject = "my-project"', "x", "US", True),
        ('engine = "bigquery"\ndataset = "x"\nproject = "elsewhere"', "x", "US", False),
    ],
)
def test_the_scale_engines_dataset_is_the_one_the_config_names(
    aggregation: str, dataset: str, location: str, accepted: bool
) -> None:
    """Aggregate's account may not create datasets: Terraform makes the one the config
    names (it made PREFIX_scale whatever the config said), in this project only."""
    config = _deploy_config() + f"\n[aggregation]\n{aggregation}\n"
    scale = TF["resource"]["google_bigquery_dataset.scale"]
    precondition = _precondition("google_bigquery_dataset_iam_member.aggregate_scale", "project")
    got = _evaluate(
        config,
        _ref(scale["dataset_id"]),
        _ref(scale["location"]).replace("var.bigquery_location", '"US"'),  # its default
        precondition,
    )
    assert got == [dataset, location, accepted]


@pytest.mark.parametrize(
    ("project", "accepted"),
    [(None, True), ("my-project", True), ("measurement-lab", True), ("elsewhere", False)],
)
def test_the_queries_run_where_the_ingest_accounts_may_run_them(
    project: str | None, accepted: bool
) -> None:
    """Terraform grants the BigQuery job roles in its own project; M-Lab grants its own.
    A config billing another project failed every query with 403."""
    config = _deploy_config()
    line = f'project = "{project}"\n' if project else ""
    config, n = re.subn(r"(?m)^project = .*\n", line, config)
    assert n == 1
    condition = _precondition("google_project_iam_member.ingest_bigquery_jobs", "source_project")
    assert _evaluate(config, condition) == [accepted]


def _sizes_refused(sizes: dict[str, dict]) -> str:
    """What `terraform console` says of `function_sizes = sizes` (its validation's
    error, or "" when the value is taken)."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(TERRAFORM / "variables.tf", tmp)
        given = ["-var", "project=p", "-var", "region=r", "-var", "config_file=x"]
        result = subprocess.run(
            [terraform, "console", *given, "-var", f"function_sizes={json.dumps(sizes)}"],
            input="jsonencode(keys(var.function_sizes))\n",
            cwd=tmp,
            capture_output=True,
            text=True,
            env={**TERRAFORM_ENV, "NO_COLOR": "1"},
            timeout=120,
        )
    return result.stderr if "Invalid value for variable" in result.stderr else ""


def test_function_sizes_are_held_to_every_function_and_the_platforms_limits() -> None:
    """A map given replaces the default whole (a plan then failed on a missing key,
    far from it), and a timeout past Cloud Functions' or the scheduler's limit failed
    the apply."""
    sizes = TF["variable"]["function_sizes"]["default"]
    assert _sizes_refused(sizes) == ""
    assert "must size every function" in _sizes_refused({"api": sizes["api"]})
    for name, timeout in (
        ("aggregate", 900),
        ("ingest-date", 541),
        ("ingest", 1801),
        ("ingest", 10),
    ):
        assert "a timeout is at most 540 s" in _sizes_refused(
            {**sizes, name: {**sizes[name], "timeout": timeout}}
        ), name
    assert _sizes_refused({**sizes, "api": {**sizes["api"], "timeout": 3600}}) == ""
    job = TF["resource"]["google_cloud_scheduler_job.ingest"]
    assert job["attempt_deadline"] == '${var.function_sizes["ingest"].timeout}s'


@pytest.mark.parametrize(("engine", "granted"), [("local", 0), ("bigquery", 1)])
def test_aggregate_may_run_bigquery_jobs_only_with_the_scale_engine(
    engine: str, granted: int
) -> None:
    """With the local engine aggregate runs no BigQuery job: its account held the
    project's jobUser role all the same (a billed query of anything, if taken over)."""
    config = _deploy_config() + f'\n[aggregation]\nengine = "{engine}"\n'
    if engine == "bigquery":
        config += 'dataset = "wa_cells"\n'
    grant = TF["resource"]["google_project_iam_member.aggregate_bigquery_jobs"]
    assert _evaluate(config, _ref(grant["count"])) == [granted]


def test_the_deploy_configs_locks_go_stale_soon_after_a_function_is_stopped() -> None:
    """A function stopped at its timeout leaves its locks, and the retries of its message
    fail until they are stale: the deploy config's lock lifetime outlasts the longest
    function that takes locks, by minutes, not hours."""
    ttl = tomllib.loads(_deploy_config())["ingest"]["lock_ttl_minutes"] * 60
    sizes = TF["variable"]["function_sizes"]["default"]
    longest = max(sizes[name]["timeout"] for name in ("ingest", "ingest-date", "aggregate"))
    assert longest < ttl <= longest + 15 * 60


def test_the_build_account_builds_into_its_own_repository() -> None:
    function = TF["resource"]["google_cloudfunctions2_function.function"]
    build = _one(function["build_config"])
    assert build["service_account"] == "${google_service_account.build.id}"
    assert build["docker_repository"] == "${google_artifact_registry_repository.functions.id}"
    repository = TF["resource"]["google_artifact_registry_repository.functions"]
    assert repository["format"] == "DOCKER"
    assert repository["location"] == "${var.region}"
    assert TF["locals"]["function_source_copies"] == (
        "gcf-v2-sources-${data.google_project.this.number}-${var.region}"
    )
    # A build starts once the build account holds every grant it needs.
    grants = {key for member, *_rest, key in _grants() if member == "build"}
    assert grants <= {_ref(d) for d in function["depends_on"]}


def _budget_plan(billing_account: str, monthly_budget: str) -> list[Any] | str:
    """For the two variables given: the variables' refusal (their validation's error),
    else [budgets made, the plan's check passed, the APIs enabled], as `terraform
    console` computes them from terraform/'s own expressions."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine")
    budget = TF["resource"]["google_billing_budget.project"]
    check = _one(TF["data"]["google_project.this"]["lifecycle"])["precondition"]
    apis = TF["resource"]["google_project_service.apis"]["for_each"]
    expressions = [_ref(budget["count"]), *(_ref(c["condition"]) for c in check), _ref(apis)]
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(TERRAFORM / "variables.tf", tmp)
        Path(tmp, "main.tf").write_text(f"locals {{\n  budget = {_local_source('budget')}\n}}\n")
        given = ["-var", "project=p", "-var", "region=r", "-var", "config_file=x"]
        given += ["-var", f"billing_account={billing_account}"]
        given += ["-var", f"monthly_budget={monthly_budget}"]
        result = subprocess.run(
            [terraform, "console", *given],
            input=f"jsonencode([{', '.join(expressions)}])\n",
            cwd=tmp,
            capture_output=True,
            text=True,
            env={**TERRAFORM_ENV, "NO_COLOR": "1"},
            timeout=120,
        )
    if "Invalid value for variable" in result.stderr:
        return result.stderr
    assert result.returncode == 0, result.stderr
    return json.loads(json.loads(result.stdout))


def test_a_budget_alerts_on_the_projects_costs_when_both_its_settings_are_given() -> None:
    """BigQuery's scans are nearly all of the bill, and nothing told the operator when
    they ran high: with a billing account and a monthly amount, a budget of this
    project's costs alerts at half, 90 % and all of it, and on the month's forecast."""
    account = "01A2B3-C4D5E6-F7A8B9"
    made, checked, apis = _budget_plan(account, "120")
    assert made == 1 and checked is True
    assert "billingbudgets.googleapis.com" in apis
    assert _budget_plan("", "0") == [0, True, sorted(set(apis) - {"billingbudgets.googleapis.com"})]
    # One without the other is refused by the plan rather than made as no budget.
    assert _budget_plan(account, "0")[:2] == [0, False]
    assert _budget_plan("", "120")[:2] == [0, False]
    assert "billing account id" in _budget_plan("my-account", "120")
    assert "whole number" in _budget_plan(account, "-5")
    assert "whole number" in _budget_plan(account, "12.5")
    budget = TF["resource"]["google_billing_budget.project"]
    assert budget["provider"] == "${google.billing}"  # with a quota project
    filters = _one(budget["budget_filter"])
    assert filters == {
        "projects": ["projects/${data.google_project.this.number}"],
        "calendar_period": "MONTH",
    }
    assert _one(_one(budget["amount"])["specified_amount"]) == {
        "units": "${tostring(var.monthly_budget)}"
    }
    rules = {(r["threshold_percent"], r.get("spend_basis")) for r in budget["threshold_rules"]}
    assert rules == {(0.5, None), (0.9, None), (1.0, None), (1.0, "FORECASTED_SPEND")}


def test_the_survey_requests_log_with_each_callers_address_is_not_kept() -> None:
    """docs/survey.md: the address is kept only as a salted hash. Cloud Run's request log
    of the survey records each caller's address beside the time of the post."""
    exclusion = TF["resource"]["google_logging_project_exclusion.survey_requests"]
    survey = '${google_cloudfunctions2_function.function["survey"].name}'
    assert exclusion["filter"] == (
        'resource.type = "cloud_run_revision" AND resource.labels.service_name = '
        f'"{survey}" AND log_id("run.googleapis.com/requests")'
    )
    assert TF["resource"]["google_cloudfunctions2_function.function"]["name"] == (
        "${var.prefix}-${each.key}"
    )
    assert exclusion.get("disabled") in (None, False)


def test_terraform_is_formatted() -> None:
    """`terraform fmt -check` when the binary is here (it needs no providers)."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on this machine")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", str(TERRAFORM)],
        capture_output=True,
        text=True,
        env=TERRAFORM_ENV,
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
