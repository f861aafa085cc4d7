package wavecoder.runner;

// Every type this file names is imported by its full name: a single-type import wins over a
// type of the same name that a program might add to this package, and the program's classes
// (default package) are reached only by reflection.
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.lang.Class;
import java.lang.Object;
import java.lang.String;
import java.lang.System;
import java.lang.Throwable;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.util.Arrays;

public final class WcRunner {
    private WcRunner() {}

    public static void main(String[] args) throws Throwable {
        byte[] buf = new byte[256];
        int used = 0;
        try (FileInputStream in = new FileInputStream("/dev/fd/3")) {
            int n;  // a pipe: no readAllBytes (it seeks)
            while (used < buf.length && (n = in.read(buf, used, buf.length - used)) > 0) used += n;
        }
        byte[] token = Arrays.copyOf(buf, used);
        Arrays.fill(buf, (byte) 0);
        Method main = Class.forName("Main").getMethod("main", String[].class);
        main.setAccessible(true);  // `class Main` need not be public (`java Main` runs it)
        try {
            main.invoke(null, (Object) args);
        } catch (InvocationTargetException e) {
            throw e.getCause();  // as `java Main` does: uncaught, exit status 1
        }
        try (FileOutputStream out = new FileOutputStream("/dev/fd/4")) {
            out.write(("PASS " + new String(token).trim() + "\n").getBytes());
        }
        System.exit(0);
    }
}
