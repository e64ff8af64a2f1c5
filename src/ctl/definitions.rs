//! export_definitions / import_definitions: the broker's GET/POST /api/definitions, to and
//! from a file ("-" is standard output / input, as rabbitmqctl's).

use std::io::Read;

use super::error::CtlError;
use super::Context;
use crate::limits::DEFINITIONS_FILE_BYTES_MAX;

const STANDARD_STREAM: &str = "-";

pub fn export(cx: &Context, file: &str) -> Result<String, CtlError> {
    let definitions = cx.client.get("/definitions", "definitions")?;
    let text = serde_json::to_string_pretty(&definitions)
        .map_err(|e| CtlError::Other(format!("encoding the definitions: {e}")))?;
    if file == STANDARD_STREAM {
        return Ok(format!("{text}\n"));
    }
    let out = cx.info(&format!(
        "Exporting definitions in JSON to a file at \"{file}\" ..."
    ));
    std::fs::write(file, format!("{text}\n"))
        .map_err(|e| CtlError::Other(format!("writing {file}: {e}")))?;
    Ok(out)
}

pub fn import(cx: &Context, file: &str) -> Result<String, CtlError> {
    let out = cx.info(&format!(
        "Importing definitions in JSON from a file at \"{file}\" ..."
    ));
    let text = read_bounded(file)?;
    // Checked here so a wrong file is named as such, not as the broker's 400.
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| CtlError::Other(format!("{file} is not JSON: {e}")))?;
    cx.client.post("/definitions", text, "definitions")?;
    Ok(out)
}

/// The whole file, refused past DEFINITIONS_FILE_BYTES_MAX (the broker's import bound).
fn read_bounded(file: &str) -> Result<String, CtlError> {
    let mut text = String::new();
    let read = if file == STANDARD_STREAM {
        std::io::stdin()
            .take(DEFINITIONS_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| {
            f.take(DEFINITIONS_FILE_BYTES_MAX + 1)
                .read_to_string(&mut text)
        })
    };
    let size = read.map_err(|e| CtlError::Other(format!("reading {file}: {e}")))?;
    if size as u64 > DEFINITIONS_FILE_BYTES_MAX {
        return Err(CtlError::Other(format!(
            "{file} is larger than {DEFINITIONS_FILE_BYTES_MAX} bytes"
        )));
    }
    Ok(text)
}
