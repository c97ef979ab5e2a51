;; gpu_noop: the smallest job that really uses the GPU, for benchmarks.
;; Creates a one-element buffer, launches `vector_add` on it (n = 1, in
;; place) and reads the element back, which waits for the launch. Returns
;; the element (4 bytes).
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
  (core func $read (canon lower (func $gpu "[method]buffer.read")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $launch (canon lower (func $gpu "launch")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "gpu" "create" (func $create (param i32 i32)))
    (import "gpu" "read" (func $read (param i32 i32 i32 i32)))
    (import "gpu" "launch" (func $launch (param i32 i32 i32 i32 i32)))
    (data (i32.const 256) "vector_add")
    (func (export "run") (param i32 i32) (result i32)
      (local $b i32)
      (block $failed
        (call $create (i32.const 1) (i32.const 0))
        (br_if $failed (i32.load8_u (i32.const 0)))
        (local.set $b (i32.load (i32.const 4)))
        ;; args: [buf b, buf b, buf b, u32 1]
        (i32.store8 (i32.const 64) (i32.const 0)) (i32.store (i32.const 68) (local.get $b))
        (i32.store8 (i32.const 72) (i32.const 0)) (i32.store (i32.const 76) (local.get $b))
        (i32.store8 (i32.const 80) (i32.const 0)) (i32.store (i32.const 84) (local.get $b))
        (i32.store8 (i32.const 88) (i32.const 2)) (i32.store (i32.const 92) (i32.const 1))
        (call $launch (i32.const 256) (i32.const 10) (i32.const 64) (i32.const 4) (i32.const 0))
        (br_if $failed (i32.load8_u (i32.const 0)))
        (call $read (local.get $b) (i32.const 0) (i32.const 1) (i32.const 0))
        (br_if $failed (i32.load8_u (i32.const 0)))
        (i32.store8 (i32.const 16) (i32.const 0))
        (i32.store (i32.const 20) (i32.load (i32.const 4)))
        (i32.store (i32.const 24) (i32.const 4))
        (return (i32.const 16)))
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (i32.store (i32.const 24) (i32.load (i32.const 12)))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "gpu" (instance
      (export "create" (func $create))
      (export "read" (func $read))
      (export "launch" (func $launch))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
