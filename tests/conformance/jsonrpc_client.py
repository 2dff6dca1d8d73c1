"""JSON-RPC 2.0 conformance of the daemon's socket, seen by independent
client libraries: jsonrpcclient builds the messages and reads the answers,
requests-unixsocket carries them over HTTP and websockets over WebSocket,
both on the Unix socket. Run by tests/tests/e2e/conformance.rs:

    python3 jsonrpc_client.py SOCKET TARGET

TARGET is a chain that succeeds at once. Exits 0 when every check holds,
1 with one line per failed check, and 77 when a library is missing.
"""

import json
import sys
import urllib.parse

try:
    import requests_unixsocket
    from jsonrpcclient import Error, Ok, notification, parse, request
    from websockets.sync.client import unix_connect
except ImportError as e:  # the test skips, or fails when required
    print(f"missing library: {e}", file=sys.stderr)
    sys.exit(77)

SOCKET, TARGET = sys.argv[1], sys.argv[2]
URL = "http+unix://" + urllib.parse.quote(SOCKET, safe="") + "/"
# Ids a client may send: strings, numbers that are not unsigned 64-bit
# integers among them, and null.
IDS = [1, "a-string", -7, 1.5, 2**64, 0]
failures = []
checks = 0


def check(condition, what):
    global checks
    checks += 1
    if not condition:
        failures.append(what)


def well_formed(answer, what):
    """The members every JSON-RPC 2.0 response object has."""
    check(isinstance(answer, dict), f"{what}: an object: {answer!r}")
    if not isinstance(answer, dict):
        return
    check(answer.get("jsonrpc") == "2.0", f"{what}: jsonrpc 2.0: {answer!r}")
    check("id" in answer, f"{what}: has an id: {answer!r}")
    check(("result" in answer) != ("error" in answer), f"{what}: result xor error: {answer!r}")


def same_id(got, sent):
    """Ids compare by type and value (1 is not 1.0, nor "1")."""
    return type(got) is type(sent) and got == sent


session = requests_unixsocket.Session()


def post(message):
    return session.post(URL, data=json.dumps(message), headers={"Content-Type": "application/json"})


def job_count():
    answer = post(request("job.list", {"limit": 1000})).json()
    response = parse(answer)
    return len(response.result["jobs"]) if isinstance(response, Ok) else -1


# --- HTTP -----------------------------------------------------------------
for id_ in IDS:
    http = post(request("daemon.info", id=id_))
    check(http.status_code == 200, f"HTTP id {id_!r}: status {http.status_code}")
    answer = http.json()
    well_formed(answer, f"HTTP id {id_!r}")
    response = parse(answer)
    check(isinstance(response, Ok), f"HTTP id {id_!r}: a result: {answer!r}")
    check(same_id(response.id, id_), f"HTTP id {id_!r}: answered with id {response.id!r}")

for bad in [True, {}, []]:
    answer = post({"jsonrpc": "2.0", "id": bad, "method": "daemon.info"}).json()
    well_formed(answer, f"HTTP id {bad!r}")
    response = parse(answer)
    check(
        isinstance(response, Error) and response.code == -32600 and response.id is None,
        f"HTTP invalid id {bad!r}: -32600 with id null: {answer!r}",
    )

response = parse(post(request("no.such.method")).json())
check(isinstance(response, Error) and response.code == -32601, f"HTTP unknown method: {response!r}")
response = parse(post(request("job.get", {"job_id": 999999})).json())
check(isinstance(response, Error) and response.code == -31001, f"HTTP missing job: {response!r}")

before = job_count()
http = post(notification("job.submit", {"target": TARGET}))
check(http.status_code == 204, f"HTTP notification: status {http.status_code}")
check(http.content == b"", f"HTTP notification: empty body: {http.content!r}")
check(job_count() == before + 1, "HTTP notification: the job was submitted")

http = post([notification("job.submit", {"target": TARGET})] * 2)
check(http.status_code == 204, f"HTTP batch of notifications: status {http.status_code}")
check(http.content == b"", f"HTTP batch of notifications: empty body: {http.content!r}")
check(job_count() == before + 3, "HTTP batch of notifications: both jobs were submitted")

mixed = [
    notification("job.submit", {"target": TARGET}),
    request("daemon.info", id=-7),
    request("daemon.info", id="s"),
]
answers = post(mixed).json()
check(isinstance(answers, list) and len(answers) == 2, f"HTTP mixed batch: two answers: {answers!r}")
for answer in answers if isinstance(answers, list) else []:
    well_formed(answer, "HTTP mixed batch")
ids = sorted(str(r.id) for r in parse(answers)) if isinstance(answers, list) else []
check(ids == ["-7", "s"], f"HTTP mixed batch: the requests' ids: {ids!r}")
check(job_count() == before + 4, "HTTP mixed batch: its notification ran")

# --- WebSocket ------------------------------------------------------------
with unix_connect(SOCKET, "ws://localhost/") as ws:

    def call(message):
        """Send `message` and return its answer, passing over the
        subscription's notifications."""
        ws.send(json.dumps(message))
        while True:
            answer = json.loads(ws.recv(timeout=30))
            if not (isinstance(answer, dict) and "method" in answer):
                return answer

    for id_ in IDS:
        answer = call(request("daemon.info", id=id_))
        well_formed(answer, f"WS id {id_!r}")
        response = parse(answer)
        check(isinstance(response, Ok), f"WS id {id_!r}: a result: {answer!r}")
        check(same_id(response.id, id_), f"WS id {id_!r}: answered with id {response.id!r}")
    for bad in [True, {}, []]:
        response = parse(call({"jsonrpc": "2.0", "id": bad, "method": "daemon.info"}))
        check(
            isinstance(response, Error) and response.code == -32600 and response.id is None,
            f"WS invalid id {bad!r}: -32600 with id null: {response!r}",
        )

    # A subscription: its answer, then an event for a job submitted by a
    # notification on the same connection, and no answer to that.
    answer = call(request("events.subscribe", {"kinds": ["job.submitted"]}, id="sub"))
    response = parse(answer)
    check(isinstance(response, Ok) and response.id == "sub", f"WS subscribe: {answer!r}")
    subscription = response.result if isinstance(response, Ok) else None
    count = job_count()
    ws.send(json.dumps(notification("job.submit", {"target": TARGET})))
    event = json.loads(ws.recv(timeout=30))
    check(
        event.get("method") == "events.event"
        and "id" not in event
        and event.get("params", {}).get("subscription") == subscription
        and event.get("params", {}).get("result", {}).get("kind") == "job.submitted",
        f"WS: the notification's job.submitted event, and nothing else: {event!r}",
    )
    check(job_count() == count + 1, "WS notification: the job was submitted")
    answer = call(request("daemon.info", id="probe"))
    check(answer.get("id") == "probe", f"WS: no answer to the notification: {answer!r}")

    answers = call(mixed)
    check(isinstance(answers, list) and len(answers) == 2, f"WS mixed batch: two answers: {answers!r}")
    ids = sorted(str(r.id) for r in parse(answers)) if isinstance(answers, list) else []
    check(ids == ["-7", "s"], f"WS mixed batch: the requests' ids: {ids!r}")

for failure in failures:
    print(failure)
print(f"{checks - len(failures)} of {checks} checks hold")
sys.exit(1 if failures else 0)
