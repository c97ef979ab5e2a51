;; noop: ignores its input and returns nothing. The benchmark guest: what is
;; left of a job once the guest does no work is Spillway's own overhead.
(component
  (core module $guest
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (i32.const 1024))
    (func (export "run") (param i32 i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 0))
      (i32.store (i32.const 24) (i32.const 0))
      (i32.const 16)))
  (core instance $g (instantiate $guest))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
