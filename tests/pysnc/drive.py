"""Drives PySNC (ServiceNow's own Python client) against an instance for tests/it/pysnc.rs.

Reads a plan from stdin: {"url", "user", "password", "scenarios": [...]}, runs each scenario
with PySNC and prints {"<scenario name>": <what PySNC saw>} as JSON on stdout. The Rust test
asks the instance's raw Table API the same questions and compares. Nothing here judges: a
scenario that raises reports {"error": <exception class>, "message": <text>}.

Scenario kinds:
- query: a GlideRecord query (encoded query and/or query-builder conditions, batch size, fields,
  display values, order, limit); reports the encoded query PySNC sent, get_row_count() and
  every row as {field: [value, display value]}, plus dot-walked attribute reads.
- get: gr.get(sys_id) or gr.get(field, value); reports whether it found a row, and the row.
- update: get, set_value, update(); reports what update() returned and the row after it.
- insert / delete: a new record, or the deletion of one.
"""

import json
import sys

import requests
from pysnc import ServiceNowClient


class PlainHttp(requests.adapters.HTTPAdapter):
    """Sends PySNC's https:// requests as plain http to the simulator on loopback.

    PySNC refuses an http:// instance URL, and the simulator serves plain HTTP; only the
    transport's scheme changes, every request and answer passes through PySNC unchanged.
    """

    def send(self, request, **kwargs):
        request.url = "http://" + request.url[len("https://"):]
        return super().send(request, **kwargs)


def connect(url, user, password):
    session = requests.Session()
    session.auth = (user, password)
    session.mount("https://", PlainHttp())
    # No automatic retries: a retried answer would hide what the instance said first.
    return ServiceNowClient(url.replace("http://", "https://", 1), session, auto_retry=False)


def element_pair(element):
    """[value, display value] as PySNC's GlideElement exposes them."""
    return [element.get_value(), element.get_display_value()]


def current_row(gr):
    row = {}
    for field in gr.fields or []:
        element = gr.get_element(field)
        if element is not None:
            row[field] = element_pair(element)
    return row


def build_query(gr, conditions):
    """Query-builder conditions: ["query", field, op, value], ["or", field, op, value] (an OR
    of the last "query"), ["null", field], ["not_null", field]."""
    last = None
    for condition in conditions:
        kind = condition[0]
        if kind == "query":
            last = gr.add_query(condition[1], condition[2], condition[3])
        elif kind == "or":
            last.add_or_condition(condition[1], condition[2], condition[3])
        elif kind == "null":
            gr.add_null_query(condition[1])
        elif kind == "not_null":
            gr.add_not_null_query(condition[1])
        else:
            raise ValueError("unknown condition " + kind)


def record(client, scenario):
    gr = client.GlideRecord(scenario["table"], batch_size=scenario.get("batch_size", 100))
    if "fields" in scenario:
        gr.fields = list(scenario["fields"])
    if "display_value" in scenario:
        gr.display_value = scenario["display_value"]
    return gr


def run_query(client, scenario):
    gr = record(client, scenario)
    if scenario.get("encoded_query"):
        gr.add_encoded_query(scenario["encoded_query"])
    build_query(gr, scenario.get("conditions", []))
    if scenario.get("order_by"):
        gr.order_by(scenario["order_by"])
    if scenario.get("order_by_desc"):
        gr.order_by_desc(scenario["order_by_desc"])
    if scenario.get("limit"):
        gr.limit = scenario["limit"]
    gr.query()
    rows, attrs = [], []
    for _ in gr:
        rows.append(current_row(gr))
        attrs.append(
            [str(getattr(getattr(gr, ref), column)) for ref, column in scenario.get("attrs", [])]
        )
    return {
        "encoded_query": gr.get_encoded_query(),
        "row_count": gr.get_row_count(),
        "rows": rows,
        "attrs": attrs,
    }


def run_get(client, scenario):
    gr = record(client, scenario)
    if "field" in scenario:
        found = gr.get(scenario["field"], scenario["value"])
    else:
        found = gr.get(scenario["sys_id"])
    return {"found": bool(found), "row": current_row(gr) if found else None}


def run_update(client, scenario):
    gr = record(client, scenario)
    if not gr.get(scenario["sys_id"]):
        return {"error": "NotFound", "message": scenario["sys_id"]}
    for field, value in scenario["values"].items():
        gr.set_value(field, value)
    returned = gr.update()
    return {"returned": None if returned is None else str(returned), "row": current_row(gr)}


def run_insert(client, scenario):
    gr = record(client, scenario)
    gr.initialize()
    for field, value in scenario["values"].items():
        gr.set_value(field, value)
    sys_id = gr.insert()
    return {"sys_id": None if sys_id is None else str(sys_id)}


def run_delete(client, scenario):
    gr = record(client, scenario)
    if not gr.get(scenario["sys_id"]):
        return {"error": "NotFound", "message": scenario["sys_id"]}
    return {"deleted": gr.delete()}


KINDS = {
    "query": run_query,
    "get": run_get,
    "update": run_update,
    "insert": run_insert,
    "delete": run_delete,
}


def main():
    plan = json.load(sys.stdin)
    out = {}
    for scenario in plan["scenarios"]:
        client = connect(plan["url"], plan["user"], scenario.get("password", plan["password"]))
        try:
            out[scenario["name"]] = KINDS[scenario["kind"]](client, scenario)
        except Exception as error:  # reported, the Rust test judges
            out[scenario["name"]] = {"error": type(error).__name__, "message": str(error)}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
