;; spin: a CPU-heavy loop. Input: the number of rounds as a little-endian
;; u32 (default 10,000,000), optionally followed by a little-endian u64 seed
;; that is XORed into the start state (so distinct seeds give distinct
;; answers: the chaos workload uses it). Runs that many xorshift64 rounds, asking the
;; host every 2^20 rounds whether it should yield (and returning an error if
;; so), then returns the final state as 16 hex digits.
(component
  (import "spillway:runtime/job@0.1.0" (instance $job
    (export "should-yield" (func (result bool)))))

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
  (core func $should-yield (canon lower (func $job "should-yield")))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "alloc" "cabi_realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "job" "should-yield" (func $should_yield (result i32)))
    (data (i32.const 64) "0123456789abcdef")
    (data (i32.const 96) "spin: asked to yield")
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $rounds i32) (local $x i64) (local $out i32) (local $i i32)
      (local.set $rounds (i32.const 10000000))
      (if (i32.ge_u (local.get $len) (i32.const 4))
        (then (local.set $rounds (i32.load (local.get $in)))))
      (local.set $x (i64.const 0x2545f4914f6cdd1d))
      (if (i32.ge_u (local.get $len) (i32.const 12))
        (then (local.set $x (i64.xor (local.get $x) (i64.load (i32.add (local.get $in) (i32.const 4)))))))
      (block $done
        (loop $round
          (br_if $done (i32.eqz (local.get $rounds)))
          (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
          (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
          (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
          (local.set $rounds (i32.sub (local.get $rounds) (i32.const 1)))
          (if (i32.eqz (i32.and (local.get $rounds) (i32.const 0xfffff)))
            (then
              (if (call $should_yield)
                (then
                  (i32.store8 (i32.const 16) (i32.const 1))
                  (i32.store (i32.const 20) (i32.const 96))
                  (i32.store (i32.const 24) (i32.const 20))
                  (return (i32.const 16))))))
          (br $round)))
      ;; 16 hex digits, most significant first.
      (local.set $out (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
      (block $hex_done
        (loop $digit
          (br_if $hex_done (i32.ge_u (local.get $i) (i32.const 16)))
          (i32.store8 (i32.add (local.get $out) (local.get $i))
            (i32.load8_u (i32.add (i32.const 64)
              (i32.wrap_i64 (i64.and (i64.shr_u (local.get $x)
                                                 (i64.extend_i32_u (i32.sub (i32.const 60) (i32.shl (local.get $i) (i32.const 2)))))
                                     (i64.const 15))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $digit)))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (local.get $out))
      (i32.store (i32.const 24) (i32.const 16))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "job" (instance (export "should-yield" (func $should-yield))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
