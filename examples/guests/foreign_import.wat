;; foreign_import: imports an interface Spillway does not provide
;; (`wasi:keyvalue/store`). Refused at upload with `unsupported_import`
;; naming it, never stored.
(component
  (import "wasi:keyvalue/store@0.2.0-draft" (instance $kv
    (export "get" (func (param "key" string) (result (list u8))))))
  (core module $guest
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
    (func (export "run") (param i32 i32) (result i32) (i32.const 0)))
  (core instance $g (instantiate $guest))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
