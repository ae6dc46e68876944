"""mapsage_client — a small client of the MapSage daemon's HTTP API (docs/api.md) for
notebooks and scripts: submit an experiment or a study, wait for it, read its curves and
any read-only SQL over the history; tag, note, rename, archive and delete runs, list them
filtered and sorted; register datasets; download checkpoints and exported weights.

Python standard library only; one module, installed with the rest (docs/python.md). Where
the server is and its token are found as `mapsage` finds them: the arguments, else
MAPSAGE_SERVER and MAPSAGE_TOKEN_FILE, else the config file ($XDG_CONFIG_HOME/mapsage/config
or ~/.config/mapsage/config: `server = URL`, `token-file = PATH`), else 127.0.0.1:8787.

    from mapsage_client import Client
    client = Client()
    run = client.submit("examples/baseline.json", changes={"optimizer.lr": 0.01})
    record = client.wait(run)
    curve = client.curve(run, "val/accuracy")          # [{"step", "epoch", "value"}, …]
    rows = client.sql("SELECT id, name FROM experiments WHERE status = ?1", "succeeded")

Tables (curves, SQL results) are lists of dicts, one per row; with `frame=True`, or by
default when pandas can be imported, a pandas DataFrame instead.
"""
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["Client", "MapsageError", "ENDED"]

DEFAULT_SERVER = "http://127.0.0.1:8787"
ENDED = ("succeeded", "failed", "cancelled")


class MapsageError(Exception):
    """The server refused a request (`status` is the HTTP status; `errors` lists a config's
    bad fields as [{"path", "message"}]), or could not be reached (`status` None)."""

    def __init__(self, message, status=None, errors=None):
        details = "".join("\n  %s: %s" % (e.get("path", ""), e.get("message", "")) for e in errors or [])
        super().__init__(message + details)
        self.status = status
        self.errors = errors or []


def config_file_path():
    """Where `mapsage` and this client read their settings (the XDG base directory rule)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not base.startswith("/"):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "mapsage", "config")


def read_config_file(path=None):
    """The config file's settings as a dict ({} without a file); a line it does not
    understand raises ValueError naming the file and the line's number, as `mapsage` does."""
    path = path or config_file_path()
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return {}
    settings = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not equals:
            raise ValueError("%s:%d: expected KEY = VALUE (keys: server, token-file), not %r" % (path, number, line))
        if key not in ("server", "token-file"):
            raise ValueError('%s:%d: unknown key "%s" (keys: server, token-file)' % (path, number, key))
        if not value:
            raise ValueError("%s:%d: %s has no value" % (path, number, key))
        if key in settings:
            raise ValueError("%s:%d: %s is set a second time" % (path, number, key))
        if key == "token-file":
            value = os.path.join(os.path.dirname(path), os.path.expanduser(value))
        settings[key] = value
    return settings


def set_path(document, path, value):
    """Sets one field of a config by its path (`optimizer.lr`, `stages[1].epochs`), as
    `mapsage submit --set` does: missing object keys are created, arrays are not grown."""
    steps = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            steps.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            if not index.isdigit() or (rest and not rest.startswith("[")):
                raise ValueError("%s: not a path like name, optimizer.lr or stages[1].epochs" % path)
            steps.append(int(index))
            rest = rest[1:]
    if not steps:
        raise ValueError("%s: not a path like name, optimizer.lr or stages[1].epochs" % path)
    def shown(count):  # the path up to (not including) step `count`, as written
        text = ""
        for step in steps[:count]:
            text += "[%d]" % step if isinstance(step, int) else ("." if text else "") + step
        return text or "the config"

    node = document
    for done, step in enumerate(steps):
        last = done == len(steps) - 1
        if isinstance(step, int):
            if not isinstance(node, list):
                raise ValueError("%s: %s is not an array" % (path, shown(done)))
            if step >= len(node):
                raise ValueError("%s: index %d is out of range: %s has %d elements" % (path, step, shown(done),
                                                                                   len(node)))
        elif not isinstance(node, dict):
            raise ValueError("%s: %s is not an object" % (path, shown(done)))
        if last:
            node[step] = value
            return
        if isinstance(step, str) and step not in node:
            if isinstance(steps[done + 1], int):
                raise ValueError("%s: %s does not exist, so it has no element to set" % (path, shown(done + 1)))
            node[step] = {}
        node = node[step]


def _frame_or_rows(rows, columns, frame):
    """`rows` (a list of dicts) as they are, or as a DataFrame: frame=True asks for one,
    None gives one when pandas is there."""
    if frame is False:
        return rows
    try:
        import pandas
    except ImportError:
        if frame:
            raise ImportError("frame=True needs pandas (apt-get install python3-pandas); "
                              "without it, tables are lists of dicts") from None
        return rows
    return pandas.DataFrame(rows, columns=columns)


class Client:
    """One daemon. Every method raises MapsageError when the server refuses or is away."""

    def __init__(self, server=None, token=None, token_file=None, timeout=30):
        settings = None
        if server is None:
            server = os.environ.get("MAPSAGE_SERVER") or None
        if server is None:
            settings = read_config_file()
            server = settings.get("server", DEFAULT_SERVER)
        if "://" not in server:
            server = "http://" + server
        self.server = server.rstrip("/")
        if token is None:
            token_file = token_file or os.environ.get("MAPSAGE_TOKEN_FILE") or None
            if token_file is None:
                settings = settings if settings is not None else read_config_file()
                token_file = settings.get("token-file")
            if token_file:
                with open(token_file, encoding="ascii") as f:
                    token = f.read().strip()
        self.token = token or None
        self.timeout = timeout

    # --- HTTP ----------------------------------------------------------------------------

    def _open(self, method, path, body=None, query=None):
        """One exchange: (payload bytes, Content-Type), or MapsageError with the server's
        reason."""
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            payload = error.read()
            try:
                answer = json.loads(payload)
            except ValueError:
                answer = {}
            message = answer.get("error") if isinstance(answer, dict) else None
            raise MapsageError("%s %s: %s" % (method, path, message or "HTTP %d" % error.code), error.code,
                               answer.get("errors") if isinstance(answer, dict) else None) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise MapsageError("cannot reach %s: %s" % (self.server, reason)) from None

    def request(self, method, path, body=None, query=None):
        """One exchange: the decoded JSON answer (or text for text/plain)."""
        payload, kind = self._open(method, path, body, query)
        if kind.startswith("application/json"):
            return json.loads(payload)
        return payload.decode("utf-8", errors="replace")

    def _download(self, path, query, output):
        """The bytes of a file the API sends; written to `output` (a path) when given, which
        then is what is returned."""
        payload, _ = self._open("GET", path, query=query)
        if output is None:
            return payload
        with open(output, "wb") as f:
            f.write(payload)
        return output

    def health(self):
        return self.request("GET", "/api/health")

    # --- experiments ---------------------------------------------------------------------

    @staticmethod
    def _document(document, changes):
        """A config or study: a dict (copied), a JSON text, or a file's path; then `changes`
        ({path: value}) applied as --set applies them."""
        if isinstance(document, dict):
            document = json.loads(json.dumps(document))
        elif isinstance(document, str) and document.lstrip().startswith("{"):
            document = json.loads(document)
        else:
            with open(document, encoding="utf-8") as f:
                document = json.load(f)
        for path, value in (changes or {}).items():
            set_path(document, path, value)
        return document

    def submit(self, config, changes=None):
        """Queues an experiment; returns its id."""
        return self.request("POST", "/api/experiments", self._document(config, changes))["id"]

    def rerun(self, experiment_id, changes=None):
        """Queues the stored config of an experiment again, with `changes`; returns the new id.
        A stage's lr that equals the old optimizer.lr follows a new one, as `mapsage rerun`."""
        config = self.experiment(experiment_id)["config"]
        old_lr = config.get("optimizer", {}).get("lr")
        for path, value in (changes or {}).items():
            set_path(config, path, value)
        new_lr = config.get("optimizer", {}).get("lr")
        if new_lr != old_lr:
            for stage in config.get("stages", []):
                if stage.get("lr") == old_lr:
                    stage["lr"] = new_lr
        return self.request("POST", "/api/experiments", config)["id"]

    def experiment(self, experiment_id):
        return self.request("GET", "/api/experiments/%d" % experiment_id)

    def experiments(self, status=None, name=None, limit=None, tag=None, archived=None, where=None, columns=None,
                    sort=None, order=None, offset=None):
        """The experiments the list gives (docs/api.md, "The list's options"): newest first,
        at most `limit` (up to 500). `status` and `tag` a name or a list (any of them);
        `archived` False (the default: not archived), True (only archived) or "all";
        `where` a condition or a list of them, all of which must hold ("optimizer.lr>0.01");
        `columns` fields whose values each row carries in "columns"; `sort` a column or a
        field, `order` "asc" or "desc"; `offset` rows to skip."""
        def joined(value):
            return ",".join(value) if isinstance(value, (list, tuple)) else value
        if archived is not None and archived not in (True, False, "all"):
            raise ValueError("archived: True, False or \"all\", not %r" % (archived,))
        query = {"status": joined(status), "name": name, "limit": limit, "tag": joined(tag),
                 "archived": {True: "1", False: "0"}.get(archived, archived), "where": joined(where),
                 "columns": joined(columns), "sort": sort, "order": order, "offset": offset}
        return self.request("GET", "/api/experiments", query=query)["experiments"]

    # --- organising ----------------------------------------------------------------------

    def change(self, experiment_id, **fields):
        """PATCH /api/experiments/{id} with any of name, note, tags, add_tags, remove_tags,
        archived; all apply or none. Returns the experiment as it now is."""
        return self.request("PATCH", "/api/experiments/%d" % experiment_id, fields)

    def tag(self, experiment_id, *tags):
        """Adds tags (those already there stay); returns the experiment's tags, sorted."""
        return self.change(experiment_id, add_tags=list(tags))["tags"]

    def untag(self, experiment_id, *tags):
        """Takes tags away (one not there is no fault); returns the tags left."""
        return self.change(experiment_id, remove_tags=list(tags))["tags"]

    def note(self, experiment_id, text):
        """Replaces the note ("" clears it); returns the experiment."""
        return self.change(experiment_id, note=text)

    def rename(self, experiment_id, name):
        return self.change(experiment_id, name=name)

    def archive(self, experiment_id):
        """Hides it from the default list, keeping everything; returns the experiment."""
        return self.change(experiment_id, archived=True)

    def unarchive(self, experiment_id):
        return self.change(experiment_id, archived=False)

    def delete(self, experiment_id):
        """Deletes its rows and checkpoint files: {"id", "deleted", "files_removed"}. A
        running run, a teacher and a study's run are refused (MapsageError, status 409)."""
        return self.request("DELETE", "/api/experiments/%d" % experiment_id)

    # --- models out ----------------------------------------------------------------------

    def export(self, experiment_id, output=None, epoch=None, format="safetensors"):
        """The weights of a checkpoint (the latest, or `epoch`'s) as safetensors
        (docs/export.md): bytes, or written to the path `output`, which is returned."""
        return self._download("/api/experiments/%d/export" % experiment_id, {"format": format, "epoch": epoch}, output)

    def checkpoint(self, experiment_id, epoch, output=None):
        """A checkpoint file as stored (docs/checkpoints.md): bytes, or written to `output`."""
        return self._download("/api/experiments/%d/checkpoints/%d" % (experiment_id, epoch), None, output)

    def cancel(self, experiment_id):
        return self.request("POST", "/api/experiments/%d/cancel" % experiment_id)

    def log(self, experiment_id):
        """The worker's log as text, "attempt N | line" a line."""
        return self.request("GET", "/api/experiments/%d/log" % experiment_id)

    def wait(self, experiment_id, timeout=None, poll=1.0, check=True):
        """Waits for an experiment to end; returns its record. With `check`, a run that did
        not succeed raises MapsageError with its error. `timeout` (seconds) raises TimeoutError."""
        return self._wait(lambda: self.experiment(experiment_id), "experiment %d" % experiment_id, timeout, poll,
                          check)

    def curves(self, experiment_id, names=None, frame=None):
        """{name: table}: each stored curve, a row per point ({"step", "value"}, and
        "epoch" for evaluations)."""
        query = {"names": ",".join(names) if names else None}
        answer = self.request("GET", "/api/experiments/%d/metrics" % experiment_id, query=query)
        result = {}
        for name, columns in answer.items():
            keys = [key for key in ("step", "epoch", "value") if key in columns]
            rows = [dict(zip(keys, values)) for values in zip(*(columns[key] for key in keys))]
            result[name] = _frame_or_rows(rows, keys, frame)
        return result

    def curve(self, experiment_id, name, frame=None):
        """One curve ("val/accuracy", "loss/total"); raises KeyError naming it when the run
        has none of that name."""
        curves = self.curves(experiment_id, [name], frame)
        if name not in curves:
            raise KeyError("experiment %d has no curve %r" % (experiment_id, name))
        return curves[name]

    # --- studies -------------------------------------------------------------------------

    def submit_study(self, study, changes=None):
        """Queues a study (docs/studies.md); returns its id."""
        return self.request("POST", "/api/studies", self._document(study, changes))["id"]

    def study(self, study_id):
        return self.request("GET", "/api/studies/%d" % study_id)

    def wait_study(self, study_id, timeout=None, poll=2.0, check=True):
        """Waits for every run of a study to end; returns the study with its statistics."""
        return self._wait(lambda: self.study(study_id), "study %d" % study_id, timeout, poll, check)

    # --- datasets ------------------------------------------------------------------------

    def add_dataset(self, name, files=None, train=None, test=None, format=None, names=None, layout=None,
                    classes=None):
        """Registers a dataset (docs/datasets.md): `files`, or `train` and `test` lists, as
        paths relative to the daemon's datasets directory. The daemon reads and checks every
        file first; returns the dataset with its checksum and statistics. A file that does
        not hold what it claims raises MapsageError whose `errors` say why."""
        body = {"name": name, "files": files, "train": train, "test": test, "format": format, "names": names,
                "layout": layout, "classes": classes}
        return self.request("POST", "/api/datasets", {k: v for k, v in body.items() if v is not None})

    def datasets(self):
        """The registered datasets, by name (without their statistics)."""
        return self.request("GET", "/api/datasets")["datasets"]

    def dataset(self, name):
        """One dataset with its statistics."""
        return self.request("GET", "/api/datasets/%s" % urllib.parse.quote(name, safe=""))

    def delete_dataset(self, name):
        """Removes a dataset from the registry (its files stay): {"name", "deleted"}. Refused
        (status 409) for fashion-mnist and while a queued or running run uses it."""
        return self.request("DELETE", "/api/datasets/%s" % urllib.parse.quote(name, safe=""))

    # --- SQL -----------------------------------------------------------------------------

    def sql(self, statement, *params, frame=None):
        """One read-only statement over the history (docs/sql.md), ?1, ?2… bound to
        `params`: a list of dicts (column → value), or a DataFrame. A result the server cut
        at its row limit raises MapsageError rather than pass for the whole."""
        answer = self.request("POST", "/api/sql", {"sql": statement, "params": list(params)})
        if answer.get("truncated"):
            raise MapsageError(answer.get("warning") or "the result was cut at the server's row limit")
        columns = answer["columns"]
        rows = [dict(zip(columns, row)) for row in answer["rows"]]
        return _frame_or_rows(rows, columns, frame)

    # --- waiting -------------------------------------------------------------------------

    @staticmethod
    def _wait(fetch, what, timeout, poll, check):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = fetch()
            if record["status"] in ENDED and record.get("finished_at"):
                if check and record["status"] != "succeeded":
                    raise MapsageError("%s %s: %s" % (what, record["status"], record.get("error") or "no error given"))
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("%s still %s after %g s" % (what, record["status"], timeout))
            time.sleep(poll)
