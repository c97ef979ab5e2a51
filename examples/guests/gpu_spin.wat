;; gpu_spin (hostile, test only): launches `test_spin`, a kernel that runs
;; for the milliseconds its input names (a little-endian u32) whatever the
;; job's deadline, and returns at once; the job's end then waits on the GPU.
;; Only nodes started with --test-kernels have it; elsewhere the launch
;; fails with unknown-kernel and the guest returns that error. Past the
;; deadline, the node's GPU watchdog must answer `deadline_exceeded` and
;; restart the node.
(component
  (import "spillway:runtime/gpu@0.1.0" (instance $gpu
    (export "buffer" (type $buffer (sub resource)))
    (type $error-code (enum "out-of-memory" "invalid-argument" "unknown-kernel" "device"))
    (export "error-code" (type $ec (eq $error-code)))
    (type $gpu-error (record (field "code" $ec) (field "message" string)))
    (export "gpu-error" (type $ge (eq $gpu-error)))
    (type $kernel-arg (variant (case "buf" (borrow $buffer)) (case "f32" f32) (case "u32" u32)))
    (export "kernel-arg" (type $ka (eq $kernel-arg)))
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
  (core func $launch (canon lower (func $gpu "launch")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "gpu" "launch" (func $launch (param i32 i32 i32 i32 i32)))
    (data (i32.const 128) "test_spin")
    (data (i32.const 160) "launched")
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $ms i32)
      (if (i32.ge_u (local.get $len) (i32.const 4))
        (then (local.set $ms (i32.load (local.get $in)))))
      (block $failed
        ;; args: [u32(ms)], 8 bytes: tag at +0, payload at +4.
        (i32.store8 (i32.const 64) (i32.const 2))
        (i32.store (i32.const 68) (local.get $ms))
        (call $launch (i32.const 128) (i32.const 9) (i32.const 64) (i32.const 1) (i32.const 0))
        (br_if $failed (i32.load8_u (i32.const 0)))
        (i32.store8 (i32.const 16) (i32.const 0))
        (i32.store (i32.const 20) (i32.const 160))
        (i32.store (i32.const 24) (i32.const 8))
        (return (i32.const 16)))
      ;; err(the gpu-error's message)
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (i32.store (i32.const 24) (i32.load (i32.const 12)))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "gpu" (instance (export "launch" (func $launch))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
