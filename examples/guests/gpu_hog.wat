;; gpu_hog: holds `gpu` buffers, for tests of a tenant's GPU memory cap.
;;
;; Input: count, len as little-endian u32, optionally then hold_ms. The
;; guest creates `count` f32 buffers of `len` elements each and keeps them
;; all until it returns, hold_ms (default 0) after the last was made.
;; Output: `count` as a little-endian u32 once every buffer was made; the
;; first refused buffer's gpu-error message is returned as the guest's
;; error string instead.
(component
  (import "spillway:runtime/job@0.1.0" (instance $job
    (export "remaining-ms" (func (result u64)))))
  (import "spillway:runtime/gpu@0.1.0" (instance $gpu
    (export "buffer" (type $buffer (sub resource)))
    (type $error-code (enum "out-of-memory" "invalid-argument" "unknown-kernel" "device"))
    (export "error-code" (type $ec (eq $error-code)))
    (type $gpu-error (record (field "code" $ec) (field "message" string)))
    (export "gpu-error" (type $ge (eq $gpu-error)))
    (export "[static]buffer.create"
      (func (param "len" u32) (result (result (own $buffer) (error $ge)))))))
  (alias export $gpu "buffer" (type $buffer))

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
  (core func $create (canon lower (func $gpu "[static]buffer.create")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $remaining (canon lower (func $job "remaining-ms")))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "gpu" "create" (func $create (param i32 i32)))
    (import "job" "remaining-ms" (func $remaining (result i64)))
    (data (i32.const 64) "gpu_hog: input must be count, len (u32 LE)")
    ;; Scratch: create returns through [0, 16), run returns through [16, 28),
    ;; the count answered at [32, 36). The buffers' handles are never
    ;; dropped: they are freed when the job ends.
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $count i32) (local $elements i32) (local $made i32)
      (local $hold i64) (local $start i64)
      (block $gpu_failed
        (block $bad_input
          (br_if $bad_input (i32.and (i32.ne (local.get $len) (i32.const 8))
                                     (i32.ne (local.get $len) (i32.const 12))))
          (if (i32.eq (local.get $len) (i32.const 12))
            (then (local.set $hold (i64.extend_i32_u (i32.load offset=8 (local.get $in))))))
          (local.set $count (i32.load (local.get $in)))
          (local.set $elements (i32.load offset=4 (local.get $in)))
          (block $done
            (loop $more
              (br_if $done (i32.ge_u (local.get $made) (local.get $count)))
              (call $create (local.get $elements) (i32.const 0))
              (br_if $gpu_failed (i32.load8_u (i32.const 0)))
              (local.set $made (i32.add (local.get $made) (i32.const 1)))
              (br $more)))
          ;; hold them hold_ms (watching remaining-ms)
          (local.set $start (call $remaining))
          (block $held
            (loop $wait
              (br_if $held (i64.ge_u (i64.sub (local.get $start) (call $remaining)) (local.get $hold)))
              (br $wait)))
          ;; ok(list<u8>): the count, 4 bytes at 32.
          (i32.store (i32.const 32) (local.get $made))
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.const 32))
          (i32.store (i32.const 24) (i32.const 4))
          (return (i32.const 16)))
        ;; bad input: err(the usage string)
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 64))
        (i32.store (i32.const 24) (i32.const 42))
        (return (i32.const 16)))
      ;; a buffer was refused: err(its gpu-error message), at +8 and +12.
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (i32.store (i32.const 24) (i32.load (i32.const 12)))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "job" (instance
      (export "remaining-ms" (func $remaining))))
    (with "gpu" (instance
      (export "create" (func $create))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
