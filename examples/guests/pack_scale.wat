;; pack_scale: launches `scale` from the function's kernel pack `ops`
;; (examples/kernels/ops.json) on the GPU: out[i] = a * x[i].
;; Input: a, then x[0..n] (f32 LE). Output: out[0..n] (f32 LE).
;; The function must list the pack (`kernel_packs: ["ops"]`) and require
;; an accelerator; on the CPU backend the launch fails and so does the job.
(component
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
  (core func $create (canon lower (func $gpu "[static]buffer.create")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $write (canon lower (func $gpu "[method]buffer.write")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $read (canon lower (func $gpu "[method]buffer.read")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $launch (canon lower (func $gpu "launch")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "alloc" "cabi_realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "gpu" "create" (func $create (param i32 i32)))
    (import "gpu" "write" (func $write (param i32 i32 i32 i32 i32)))
    (import "gpu" "read" (func $read (param i32 i32 i32 i32)))
    (import "gpu" "launch" (func $launch (param i32 i32 i32 i32 i32)))
    (data (i32.const 256) "ops/scale")
    (data (i32.const 320) "pack_scale: input is a, then x (f32 LE), at least one x")
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $n i32) (local $x i32) (local $out i32) (local $data i32)
      (block $gpu_failed
        (block $bad_input
          (br_if $bad_input (i32.lt_u (local.get $len) (i32.const 8)))
          (br_if $bad_input (i32.and (local.get $len) (i32.const 3)))
          (local.set $n (i32.shr_u (i32.sub (local.get $len) (i32.const 4)) (i32.const 2)))
          ;; x, 4-byte aligned as list<f32> requires.
          (local.set $data (call $realloc (i32.const 0) (i32.const 0) (i32.const 4)
                              (i32.shl (local.get $n) (i32.const 2))))
          (memory.copy (local.get $data) (i32.add (local.get $in) (i32.const 4))
                       (i32.shl (local.get $n) (i32.const 2)))
          (call $create (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $x (i32.load (i32.const 4)))
          (call $create (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $out (i32.load (i32.const 4)))
          (call $write (local.get $x) (i32.const 0) (local.get $data) (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          ;; args: [buf x, buf out, u32 n, f32 a]
          (i32.store8 (i32.const 64) (i32.const 0)) (i32.store (i32.const 68) (local.get $x))
          (i32.store8 (i32.const 72) (i32.const 0)) (i32.store (i32.const 76) (local.get $out))
          (i32.store8 (i32.const 80) (i32.const 2)) (i32.store (i32.const 84) (local.get $n))
          (i32.store8 (i32.const 88) (i32.const 1)) (f32.store (i32.const 92) (f32.load (local.get $in)))
          (call $launch (i32.const 256) (i32.const 9) (i32.const 64) (i32.const 4) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (call $read (local.get $out) (i32.const 0) (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.load (i32.const 4)))
          (i32.store (i32.const 24) (i32.shl (i32.load (i32.const 8)) (i32.const 2)))
          (return (i32.const 16)))
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 320))
        (i32.store (i32.const 24) (i32.const 55))
        (return (i32.const 16)))
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (i32.store (i32.const 24) (i32.load (i32.const 12)))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "gpu" (instance
      (export "create" (func $create))
      (export "write" (func $write))
      (export "read" (func $read))
      (export "launch" (func $launch))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
