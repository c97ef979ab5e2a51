//! Whether a component runs guest code when it is instantiated: a start
//! function in any core module or component, nested ones included. Such a
//! component is never instantiated ahead of its job (`warm`). Pure: read
//! from the binary with `wasmparser`.

/// Whether instantiating `bytes` (a component, binary or text) runs no
/// guest code: no core module and no component in it has a start
/// function. Anything that does not parse counts as running code.
pub(crate) fn runs_no_code_at_instantiation(bytes: &[u8]) -> bool {
    let Ok(binary) = wat::parse_bytes(bytes) else {
        return false;
    };
    wasmparser::Parser::new(0)
        .parse_all(&binary)
        .all(|payload| match payload {
            Ok(wasmparser::Payload::StartSection { .. })
            | Ok(wasmparser::Payload::ComponentStartSection { .. })
            | Err(_) => false,
            Ok(_) => true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_functions_anywhere_make_a_component_unwarmable() {
        let plain = br#"(component
            (core module $m (memory 1) (func (export "f")))
            (core instance (instantiate $m)))"#;
        assert!(runs_no_code_at_instantiation(plain));
        let core_start = br#"(component
            (core module $m (memory 1) (func $s) (start $s))
            (core instance (instantiate $m)))"#;
        assert!(!runs_no_code_at_instantiation(core_start));
        let nested = br#"(component
            (component $inner
              (core module $m (func $s) (start $s))
              (core instance (instantiate $m)))
            (instance (instantiate $inner)))"#;
        assert!(!runs_no_code_at_instantiation(nested));
        assert!(!runs_no_code_at_instantiation(b"not wasm"));
    }
}
