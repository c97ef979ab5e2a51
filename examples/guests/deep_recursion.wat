;; deep_recursion (hostile): recurses without end. The guest's stack limit
;; must turn this into a `guest_trap` (stack overflow), not a host crash.
(component
  (core module $guest
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (i32.const 1024))
    (func $down (param $n i64) (result i64)
      (i64.add (call $down (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))
    (func (export "run") (param i32 i32) (result i32)
      (drop (call $down (i64.const 0)))
      (i32.const 16)))
  (core instance $g (instantiate $guest))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
