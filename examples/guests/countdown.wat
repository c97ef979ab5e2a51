;; countdown: streams output chunks through `job.emit`.
;;
;; Input: a byte n (default 3, at most 9) and optionally a byte g. Emits the
;; chunks "n\n", …, "1\n" in order, g·10 ms apart (watching `remaining-ms`;
;; g = 0 or absent: at once), then returns "liftoff\n". The client
;; receives the chunks followed by the returned bytes.
(component
  (import "spillway:runtime/job@0.1.0" (instance $job
    (export "emit" (func (param "chunk" (list u8)) (result (result (error string)))))
    (export "remaining-ms" (func (result u64)))))

  (core module $alloc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                 (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
      (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
        (then
          (if (i32.eq (memory.grow (i32.sub (i32.add (i32.shr_u (global.get $heap) (i32.const 16)) (i32.const 1))
                                            (memory.size)))
                      (i32.const -1))
            (then unreachable))))
      (if (local.get $old) (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
      (local.get $ptr)))
  (core instance $a (instantiate $alloc))
  (core func $emit (canon lower (func $job "emit")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $remaining (canon lower (func $job "remaining-ms")))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "job" "emit" (func $emit (param i32 i32 i32)))
    (import "job" "remaining-ms" (func $remaining (result i64)))
    (data (i32.const 64) "liftoff\n")
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $n i32) (local $gap i64) (local $start i64) (local $i i64)
      (local.set $n (i32.const 3))
      (if (local.get $len) (then (local.set $n (i32.load8_u (local.get $in)))))
      (if (i32.ge_u (local.get $len) (i32.const 2))
        (then (local.set $gap
          (i64.mul (i64.extend_i32_u (i32.load8_u offset=1 (local.get $in))) (i64.const 10)))))
      (if (i32.gt_u (local.get $n) (i32.const 9)) (then (local.set $n (i32.const 9))))
      (local.set $start (call $remaining))
      (block $done
        (loop $next
          (br_if $done (i32.eqz (local.get $n)))
          ;; chunk i waits until i·gap ms have passed since the start
          (block $waited
            (loop $spin
              (br_if $waited
                (i64.ge_u (i64.sub (local.get $start) (call $remaining))
                          (i64.mul (local.get $i) (local.get $gap))))
              (br $spin)))
          (local.set $i (i64.add (local.get $i) (i64.const 1)))
          ;; the chunk "<digit>\n" at 80
          (i32.store8 (i32.const 80) (i32.add (i32.const 48) (local.get $n)))
          (i32.store8 (i32.const 81) (i32.const 10))
          (call $emit (i32.const 80) (i32.const 2) (i32.const 0))
          ;; emit failed (output limit): return its error string
          (if (i32.load8_u (i32.const 0))
            (then
              (i32.store8 (i32.const 16) (i32.const 1))
              (i32.store (i32.const 20) (i32.load (i32.const 4)))
              (i32.store (i32.const 24) (i32.load (i32.const 8)))
              (return (i32.const 16))))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $next)))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 64))
      (i32.store (i32.const 24) (i32.const 8))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "job" (instance (export "emit" (func $emit)) (export "remaining-ms" (func $remaining))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
