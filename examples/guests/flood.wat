;; flood: emits a lot of output, fast, through `job.emit`.
;;
;; Input: a little-endian u32 count (default 16). Emits `count` chunks of
;; 64 KiB (each filled with the byte 'x'), then returns "done\n". Used to
;; show that a client that stops reading holds the guest back instead of
;; filling memory.
(component
  (import "spillway:runtime/job@0.1.0" (instance $job
    (export "emit" (func (param "chunk" (list u8)) (result (result (error string)))))))

  (core module $alloc
    (memory (export "memory") 2)
    (global $heap (mut i32) (i32.const 70000))
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

  (core module $guest
    (import "alloc" "memory" (memory 2))
    (import "job" "emit" (func $emit (param i32 i32 i32)))
    (data (i32.const 64) "done\n")
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $n i32)
      (local.set $n (i32.const 16))
      (if (i32.ge_u (local.get $len) (i32.const 4)) (then (local.set $n (i32.load (local.get $in)))))
      ;; the chunk: 64 KiB of 'x' at 4096
      (memory.fill (i32.const 4096) (i32.const 120) (i32.const 65536))
      (block $done
        (loop $next
          (br_if $done (i32.eqz (local.get $n)))
          (call $emit (i32.const 4096) (i32.const 65536) (i32.const 0))
          ;; emit failed (output limit, cancel): return its error string
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
      (i32.store (i32.const 24) (i32.const 5))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "job" (instance (export "emit" (func $emit))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
