;; pack_peek (hostile, test only): reads GPU memory by raw address through
;; a kernel pack named `peek` (node/tests/gpu_isolation.rs has it), to show
;; what a separate CUDA context keeps out. Input byte 0 is the mode:
;; - 0, hold: input[4..20] is 4 f32, optionally then input[20..24] a
;;   padding (u32, elements): a buffer of that many f32 is made first, so
;;   the next one lies past that much of the address space. The 4 f32 go
;;   into a buffer; the pack's
;;   `address` kernel writes that buffer's device address into another;
;;   the guest emits it (8 bytes, little-endian) and then waits, holding the
;;   buffer, until its deadline is 100 ms away (or it is cancelled). Returns
;;   the 4 f32 read back from the buffer.
;; - 1, peek: input[4..12] is an address (u64 LE). The pack's `peek` kernel
;;   copies 4 f32 from that address into a buffer of the guest's own;
;;   returns them. Where the address is another process's memory the
;;   kernel faults instead.
(component
  (import "spillway:runtime/job@0.1.0" (instance $job
    (export "emit" (func (param "chunk" (list u8)) (result (result (error string)))))
    (export "remaining-ms" (func (result u64)))))
  (import "spillway:runtime/gpu@0.1.0" (instance $gpu
    (export "buffer" (type $buffer (sub resource)))
    (type $error-code (enum "out-of-memory" "invalid-argument" "unknown-kernel" "device"))
    (export "error-code" (type $ec (eq $error-code)))
    (type $gpu-error (record (field "code" $ec) (field "message" string)))
    (export "gpu-error" (type $ge (eq $gpu-error)))
    (type $kernel-arg (variant (case "buf" (borrow $buffer)) (case "f32" f32) (case "u32" u32)))
    (export "kernel-arg" (type $ka (eq $kernel-arg)))
    (export "[static]buffer.create"
      (func (param "len" u32) (result (result (own $buffer) (error $ge)))))
    (export "[method]buffer.write"
      (func (param "self" (borrow $buffer)) (param "offset" u32) (param "data" (list f32))
            (result (result (error $ge)))))
    (export "[method]buffer.read"
      (func (param "self" (borrow $buffer)) (param "offset" u32) (param "len" u32)
            (result (result (list f32) (error $ge)))))
    (export "launch"
      (func (param "kernel" string) (param "args" (list $ka)) (result (result (error $ge)))))))

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
  (core func $create (canon lower (func $gpu "[static]buffer.create")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $write (canon lower (func $gpu "[method]buffer.write")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $read (canon lower (func $gpu "[method]buffer.read")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $launch (canon lower (func $gpu "launch")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))

  ;; Memory: 0..16 a call's result area; 16..28 run's result; 64..96 kernel
  ;; args; 128 the secret copied (aligned); 256 kernel names; 320 messages.
  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "alloc" "cabi_realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "job" "emit" (func $emit (param i32 i32 i32)))
    (import "job" "remaining-ms" (func $remaining (result i64)))
    (import "gpu" "create" (func $create (param i32 i32)))
    (import "gpu" "write" (func $write (param i32 i32 i32 i32 i32)))
    (import "gpu" "read" (func $read (param i32 i32 i32 i32)))
    (import "gpu" "launch" (func $launch (param i32 i32 i32 i32 i32)))
    (data (i32.const 256) "peek/address")
    (data (i32.const 272) "peek/peek")
    (data (i32.const 320) "pack_peek: input is mode 0 and 4 f32, or mode 1 and a u64 address")
    (data (i32.const 400) "pack_peek: emit failed")

    ;; A new buffer of `len` f32, or 0 (the error is at 4..12).
    (func $buffer (param $len i32) (result i32)
      (call $create (local.get $len) (i32.const 0))
      (if (result i32) (i32.load8_u (i32.const 0))
        (then (i32.const 0))
        (else (i32.load (i32.const 4)))))

    ;; Returns `len` bytes at `ptr` as run's ok result.
    (func $ok (param $ptr i32) (param $len i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (local.get $ptr))
      (i32.store (i32.const 24) (local.get $len))
      (i32.const 16))

    ;; Returns the string at `ptr` as run's error.
    (func $err (param $ptr i32) (param $len i32) (result i32)
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (local.get $ptr))
      (i32.store (i32.const 24) (local.get $len))
      (i32.const 16))

    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $x i32) (local $out i32) (local $pad i32)
      (block $gpu_failed
        (block $bad_input
          (br_if $bad_input (i32.lt_u (local.get $len) (i32.const 12)))
          (if (i32.eqz (i32.load8_u (local.get $in)))
            (then
              ;; hold
              (br_if $bad_input (i32.lt_u (local.get $len) (i32.const 20)))
              (memory.copy (i32.const 128) (i32.add (local.get $in) (i32.const 4)) (i32.const 16))
              (if (i32.ge_u (local.get $len) (i32.const 24))
                (then
                  (if (i32.load offset=20 (local.get $in))
                    (then
                      (br_if $gpu_failed (i32.eqz (local.tee $pad
                        (call $buffer (i32.load offset=20 (local.get $in))))))))))
              (br_if $gpu_failed (i32.eqz (local.tee $x (call $buffer (i32.const 4)))))
              (call $write (local.get $x) (i32.const 0) (i32.const 128) (i32.const 4) (i32.const 0))
              (br_if $gpu_failed (i32.load8_u (i32.const 0)))
              (br_if $gpu_failed (i32.eqz (local.tee $out (call $buffer (i32.const 2)))))
              ;; address(x, out, n = 2)
              (i32.store8 (i32.const 64) (i32.const 0)) (i32.store (i32.const 68) (local.get $x))
              (i32.store8 (i32.const 72) (i32.const 0)) (i32.store (i32.const 76) (local.get $out))
              (i32.store8 (i32.const 80) (i32.const 2)) (i32.store (i32.const 84) (i32.const 2))
              (call $launch (i32.const 256) (i32.const 12) (i32.const 64) (i32.const 3) (i32.const 0))
              (br_if $gpu_failed (i32.load8_u (i32.const 0)))
              (call $read (local.get $out) (i32.const 0) (i32.const 2) (i32.const 0))
              (br_if $gpu_failed (i32.load8_u (i32.const 0)))
              ;; the address's 8 bytes, as read
              (call $emit (i32.load (i32.const 4)) (i32.const 8) (i32.const 32))
              (if (i32.load8_u (i32.const 32)) (then (return (call $err (i32.const 400) (i32.const 22)))))
              ;; hold the buffer until 100 ms before the deadline
              (block $held
                (loop $wait
                  (br_if $held (i64.lt_u (call $remaining) (i64.const 100)))
                  (br $wait)))
              (call $read (local.get $x) (i32.const 0) (i32.const 4) (i32.const 0))
              (br_if $gpu_failed (i32.load8_u (i32.const 0)))
              (return (call $ok (i32.load (i32.const 4)) (i32.const 16)))))
          ;; peek(out, lo, hi, n = 4)
          (br_if $gpu_failed (i32.eqz (local.tee $out (call $buffer (i32.const 4)))))
          (i32.store8 (i32.const 64) (i32.const 0)) (i32.store (i32.const 68) (local.get $out))
          (i32.store8 (i32.const 72) (i32.const 2)) (i32.store (i32.const 76) (i32.load offset=4 (local.get $in)))
          (i32.store8 (i32.const 80) (i32.const 2)) (i32.store (i32.const 84) (i32.load offset=8 (local.get $in)))
          (i32.store8 (i32.const 88) (i32.const 2)) (i32.store (i32.const 92) (i32.const 4))
          (call $launch (i32.const 272) (i32.const 9) (i32.const 64) (i32.const 4) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (call $read (local.get $out) (i32.const 0) (i32.const 4) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (return (call $ok (i32.load (i32.const 4)) (i32.const 16))))
        (return (call $err (i32.const 320) (i32.const 65))))
      ;; the gpu error's message (its record: code at 4, string at 8..16)
      (call $err (i32.load (i32.const 8)) (i32.load (i32.const 12)))))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "job" (instance
      (export "emit" (func $emit))
      (export "remaining-ms" (func $remaining))))
    (with "gpu" (instance
      (export "create" (func $create))
      (export "write" (func $write))
      (export "read" (func $read))
      (export "launch" (func $launch))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
