#!/usr/bin/env python3
"""Generate src/protocol/methods.rs from RabbitMQ's extended AMQP 0-9-1 XML.

Usage: python3 scripts/gen_methods.py [spec.xml] > src/protocol/methods.rs && cargo fmt

The XML is the source of truth, with two documented corrections (see SUPPLEMENT and
SYNC_REQUEST_FIXES): the stripped file we ship lacks RabbitMQ's connection.blocked/unblocked/
update-secret(-ok), and it omits `synchronous`/`response` on basic.recover although RabbitMQ
(and every client) treats basic.recover as a request answered by basic.recover-ok.
"""

import sys
import xml.etree.ElementTree as ET

DEFAULT_SPEC = "/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml"

# (class name, method xml) appended to the class; written in the XML's own shape.
SUPPLEMENT = {
    "connection": """
    <x>
    <method name="blocked" index="60">
      <field name="reason" domain="shortstr"/>
    </method>
    <method name="unblocked" index="61"/>
    <method name="update-secret" synchronous="1" index="70">
      <response name="update-secret-ok"/>
      <field name="new-secret" domain="longstr"/>
      <field name="reason" domain="shortstr"/>
    </method>
    <method name="update-secret-ok" synchronous="1" index="71"/>
    </x>
    """,
}

# Methods that are requests awaiting a reply although the stripped XML does not say so.
SYNC_REQUEST_FIXES = {("basic", "recover")}

RUST_TYPES = {
    "bit": "bool",
    "octet": "u8",
    "short": "u16",
    "long": "u32",
    "longlong": "u64",
    "timestamp": "u64",
    "shortstr": "ShortStr",
    "longstr": "Bytes",
    "table": "FieldTable",
}

# Field names that are Rust keywords or that the API renames.
FIELD_RENAMES = {"type": "kind"}


def camel(name):
    return "".join(part.capitalize() for part in name.split("-"))


def snake(name):
    name = FIELD_RENAMES.get(name, name)
    return name.replace("-", "_")


def load(path):
    root = ET.parse(path).getroot()
    domains = {d.get("name"): d.get("type") for d in root.findall("domain")}
    classes = []
    for cls in root.findall("class"):
        cname = cls.get("name")
        method_elems = list(cls.findall("method"))
        if cname in SUPPLEMENT:
            method_elems += list(ET.fromstring(SUPPLEMENT[cname]).findall("method"))
        methods = []
        for m in method_elems:
            fields = []
            for f in m.findall("field"):
                ftype = f.get("type") or domains[f.get("domain")]
                fields.append(
                    {
                        "name": f.get("name"),
                        "type": ftype,
                        "reserved": f.get("reserved") == "1",
                    }
                )
            mname = m.get("name")
            has_response = len(m.findall("response")) > 0
            sync = m.get("synchronous") == "1" and has_response
            if (cname, mname) in SYNC_REQUEST_FIXES:
                sync = True
            methods.append(
                {
                    "name": mname,
                    "index": int(m.get("index")),
                    "content": m.get("content") == "1",
                    "sync_request": sync,
                    "fields": fields,
                }
            )
        methods.sort(key=lambda m: m["index"])
        classes.append({"name": cname, "index": int(cls.get("index")), "methods": methods})
    classes.sort(key=lambda c: c["index"])
    return classes


def struct_name(cls, m):
    return camel(cls["name"]) + camel(m["name"])


def bit_groups(fields):
    """Yield ('bits', [fields]) for runs of consecutive bits, else ('field', field)."""
    run = []
    for f in fields:
        if f["type"] == "bit":
            run.append(f)
            if len(run) == 8:
                yield ("bits", run)
                run = []
            continue
        if run:
            yield ("bits", run)
            run = []
        yield ("field", f)
    if run:
        yield ("bits", run)


def emit_struct(out, cls, m):
    name = struct_name(cls, m)
    out.append(f"/// `{cls['name']}.{m['name']}` ({cls['index']}, {m['index']}).")
    out.append("#[derive(Debug, Clone, PartialEq, Default)]")
    visible = [f for f in m["fields"] if not f["reserved"]]
    if not visible:
        out.append(f"pub struct {name};")
    else:
        out.append(f"pub struct {name} {{")
        for f in visible:
            out.append(f"    pub {snake(f['name'])}: {RUST_TYPES[f['type']]},")
        out.append("}")
    out.append("")
    out.append(f"impl {name} {{")
    out.append(f"    pub const CLASS_ID: u16 = {cls['index']};")
    out.append(f"    pub const METHOD_ID: u16 = {m['index']};")
    out.append("")
    emit_decode(out, m, name, visible)
    out.append("")
    emit_encode(out, m, visible)
    out.append("}")
    out.append("")
    out.append(f"impl From<{name}> for Method {{")
    out.append(f"    fn from(method: {name}) -> Method {{")
    out.append(f"        Method::{name}(method)")
    out.append("    }")
    out.append("}")
    out.append("")


def read_expr(ftype):
    return {
        "octet": "read_u8(args)?",
        "short": "read_u16(args)?",
        "long": "read_u32(args)?",
        "longlong": "read_u64(args)?",
        "timestamp": "read_u64(args)?",
        "shortstr": "read_shortstr(args)?",
        "longstr": "read_longstr(args)?",
        "table": "read_table(args)?",
    }[ftype]


def skip_stmt(ftype):
    return {
        "octet": "read_u8(args)?;",
        "short": "read_u16(args)?;",
        "long": "read_u32(args)?;",
        "longlong": "read_u64(args)?;",
        "shortstr": "skip_shortstr(args)?;",
        "longstr": "skip_longstr(args)?;",
        "table": "read_table(args)?;",
    }[ftype]


def emit_decode(out, m, name, visible):
    arg = "args" if m["fields"] else "_args"
    out.append(f"    pub fn decode({arg}: &mut Bytes) -> Result<Self, ProtocolError> {{")
    for kind, item in bit_groups(m["fields"]):
        if kind == "bits":
            if all(f["reserved"] for f in item):
                out.append("        read_u8(args)?;")
                continue
            out.append("        let bits = read_u8(args)?;")
            for i, f in enumerate(item):
                if not f["reserved"]:
                    out.append(f"        let {snake(f['name'])} = bits & 0x{1 << i:02x} != 0;")
        elif item["reserved"]:
            out.append(f"        {skip_stmt(item['type'])}")
        else:
            out.append(f"        let {snake(item['name'])} = {read_expr(item['type'])};")
    if not visible:
        out.append(f"        Ok({name})")
    else:
        names = ", ".join(snake(f["name"]) for f in visible)
        out.append(f"        Ok({name} {{ {names} }})")
    out.append("    }")


def write_stmt(f):
    field = f"self.{snake(f['name'])}"
    if f["reserved"]:
        return {
            "octet": "out.put_u8(0);",
            "short": "out.put_u16(0);",
            "long": "out.put_u32(0);",
            "longlong": "out.put_u64(0);",
            "shortstr": "out.put_u8(0);",
            "longstr": "out.put_u32(0);",
            "table": "out.put_u32(0);",
        }[f["type"]]
    return {
        "octet": f"out.put_u8({field});",
        "short": f"out.put_u16({field});",
        "long": f"out.put_u32({field});",
        "longlong": f"out.put_u64({field});",
        "timestamp": f"out.put_u64({field});",
        "shortstr": f"write_shortstr(out, &{field});",
        "longstr": f"write_longstr(out, &{field});",
        "table": f"write_table(out, &{field});",
    }[f["type"]]


def emit_encode(out, m, visible):
    arg = "out" if m["fields"] else "_out"
    out.append(f"    pub fn encode(&self, {arg}: &mut BytesMut) {{")
    for kind, item in bit_groups(m["fields"]):
        if kind == "bits":
            terms = [
                (f"(u8::from(self.{snake(f['name'])}) << {i})" if i else f"u8::from(self.{snake(f['name'])})")
                for i, f in enumerate(item)
                if not f["reserved"]
            ]
            out.append(f"        out.put_u8({' | '.join(terms) if terms else '0'});")
        else:
            out.append(f"        {write_stmt(item)}")
    out.append("    }")


def emit_method_enum(out, classes):
    all_methods = [(c, m) for c in classes for m in c["methods"]]
    out.append("/// Every method of the protocol, one variant per method, named `<Class><Method>`.")
    out.append("#[derive(Debug, Clone, PartialEq)]")
    out.append("pub enum Method {")
    for c, m in all_methods:
        n = struct_name(c, m)
        out.append(f"    {n}({n}),")
    out.append("}")
    out.append("")
    out.append("impl Method {")

    def match_fn(sig, arm):
        out.append(f"    pub fn {sig} {{")
        out.append("        match self {")
        for c, m in all_methods:
            out.append(f"            Method::{struct_name(c, m)}(_) => {arm(c, m)},")
        out.append("        }")
        out.append("    }")
        out.append("")

    match_fn("class_id(&self) -> u16", lambda c, m: str(c["index"]))
    match_fn("method_id(&self) -> u16", lambda c, m: str(m["index"]))
    out.append("    /// The spec name, e.g. `\"basic.publish\"`, for logs and close reply texts.")
    match_fn("name(&self) -> &'static str", lambda c, m: f'"{c["name"]}.{m["name"]}"')
    out.append("    /// True for the methods followed by a content header and body frames.")
    match_fn("has_content(&self) -> bool", lambda c, m: "true" if m["content"] else "false")
    out.append("    /// True for requests the peer must answer before the channel may send another")
    out.append("    /// synchronous request (the XML's `synchronous=\"1\"` on methods with a response;")
    out.append("    /// basic.recover included, as RabbitMQ treats it). A `no_wait` flag is the caller's.")
    match_fn(
        "is_synchronous_request(&self) -> bool",
        lambda c, m: "true" if m["sync_request"] else "false",
    )

    out.append("    /// Decodes the arguments of method (`class_id`, `method_id`). `args` must hold")
    out.append("    /// exactly the arguments: trailing bytes are a syntax error.")
    out.append(
        "    pub fn decode(class_id: u16, method_id: u16, args: &mut Bytes) -> Result<Method, ProtocolError> {"
    )
    out.append("        let method = match (class_id, method_id) {")
    for c, m in all_methods:
        n = struct_name(c, m)
        out.append(f"            ({c['index']}, {m['index']}) => Method::{n}({n}::decode(args)?),")
    out.append(
        "            _ => return Err(ProtocolError::UnknownMethod { class_id, method_id }),"
    )
    out.append("        };")
    out.append("        if !args.is_empty() {")
    out.append("            return Err(ProtocolError::TrailingBytes { extra: args.len() });")
    out.append("        }")
    out.append("        Ok(method)")
    out.append("    }")
    out.append("")
    out.append("    /// Encodes the arguments only (what follows the class and method ids).")
    out.append("    pub fn encode(&self, out: &mut BytesMut) {")
    out.append("        match self {")
    for c, m in all_methods:
        out.append(f"            Method::{struct_name(c, m)}(method) => method.encode(out),")
    out.append("        }")
    out.append("    }")
    out.append("}")
    out.append("")
    out.append("/// (class id, method id) of every method, in spec order; for tests and tooling.")
    out.append(f"pub const ALL_METHOD_IDS: [(u16, u16); {len(all_methods)}] = [")
    for c, m in all_methods:
        out.append(f"    ({c['index']}, {m['index']}),")
    out.append("];")


def sample_expr(f, position, invert):
    """A non-default value per field, distinct per position, so swapped fields are caught."""
    t = f["type"]
    name = snake(f["name"])
    if t == "bit":
        return "true" if (position % 2 == 0) != invert else "false"
    if t == "octet":
        return str(0xA0 + position)
    if t == "short":
        return str(0x1000 + 7 * position)
    if t == "long":
        return f"{0x10000000 + 13 * position}"
    if t in ("longlong", "timestamp"):
        return f"{0x1000000000000000 + 17 * position}"
    if t == "shortstr":
        return f'"{name}-é{position}".to_string()'
    if t == "longstr":
        return f'Bytes::from_static(b"{name}\\x00\\xff{position}")'
    if t == "table":
        return "sample_table()"
    raise ValueError(t)


def emit_samples(out, classes):
    out.append("")
    out.append("/// Every method with non-default argument values, twice: bits set in one pattern and")
    out.append("/// its inverse, so a misplaced bit cannot round-trip by luck.")
    out.append("#[cfg(test)]")
    out.append("pub(crate) fn sample_methods(sample_table: fn() -> FieldTable) -> Vec<Method> {")
    out.append("    vec![")
    for invert in (False, True):
        for c in classes:
            for m in c["methods"]:
                n = struct_name(c, m)
                visible = [f for f in m["fields"] if not f["reserved"]]
                if not visible:
                    out.append(f"        Method::{n}({n}),")
                    continue
                parts = ", ".join(
                    f"{snake(f['name'])}: {sample_expr(f, i, invert)}" for i, f in enumerate(visible)
                )
                out.append(f"        Method::{n}({n} {{ {parts} }}),")
    out.append("    ]")
    out.append("}")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SPEC
    classes = load(path)
    out = [
        "// @generated by scripts/gen_methods.py from the RabbitMQ extended AMQP 0-9-1 XML.",
        "// Do not edit by hand: change the script and regenerate.",
        "//! One struct per AMQP method and the `Method` enum over all of them.",
        "",
        "use bytes::{BufMut, Bytes, BytesMut};",
        "",
        "use super::codec::{",
        "    read_longstr, read_shortstr, read_table, read_u16, read_u32, read_u64, read_u8, skip_longstr,",
        "    skip_shortstr, write_longstr, write_shortstr, write_table,",
        "};",
        "use super::{FieldTable, ProtocolError, ShortStr};",
        "",
    ]
    for c in classes:
        for m in c["methods"]:
            emit_struct(out, c, m)
    emit_method_enum(out, classes)
    emit_samples(out, classes)
    print("\n".join(out))


if __name__ == "__main__":
    main()
