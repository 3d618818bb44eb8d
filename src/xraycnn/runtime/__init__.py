"""Process set-up, done before TensorFlow runs its first operation: thread pools sized to the cores this
process may use (`threads`), the precision policy the hardware supports (`precision`), TensorFlow's C++
start-up lines kept off the terminal (`native_stderr`); and the long-lived objects of a search kept out of
the garbage collector's way (`heap`)."""
