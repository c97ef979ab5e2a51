;; huge_copy (hostile): abuses `memory.copy`. Input byte 0 (or no input):
;; one copy of nearly 4 GiB in a one-page memory, which must trap (out of
;; bounds) rather than touch host memory. Input byte 1: grows to 8 MiB and
;; copies all of it over itself in a loop forever, which the deadline must
;; stop.
(component
  (core module $guest
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (i32.const 1024))
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (if (i32.and (i32.ne (local.get $len) (i32.const 0))
                   (i32.eq (i32.load8_u (local.get $in)) (i32.const 1)))
        (then
          (drop (memory.grow (i32.const 127)))
          (loop $again
            (memory.copy (i32.const 0) (i32.const 16) (i32.const 0x7ffff0))
            (br $again))))
      (memory.copy (i32.const 0) (i32.const 16) (i32.const 0xfffffff0))
      (i32.const 16)))
  (core instance $g (instantiate $guest))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
