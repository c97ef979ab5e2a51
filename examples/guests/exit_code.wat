;; exit_code: ends through `wasi:cli/exit`'s `exit-with-code` with the
;; code in its input's first byte (3 when the input is empty), as a C or
;; Rust program's `exit(n)` does where the toolchain imports it. The job
;; fails `guest_exit` with that code; 0 ends it like a plain return.
(component
  (import "wasi:cli/exit@0.2.12" (instance $exit
    (export "exit-with-code" (func (param "status-code" u8)))))
  (core func $exit_with_code (canon lower (func $exit "exit-with-code")))
  (core instance $wasi (export "exit-with-code" (func $exit_with_code)))
  (core module $guest
    (import "wasi" "exit-with-code" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (if (i32.eqz (local.get $len))
        (then (call $exit (i32.const 3))))
      (call $exit (i32.load8_u (local.get $in)))
      unreachable))
  (core instance $g (instantiate $guest (with "wasi" (instance $wasi))))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
