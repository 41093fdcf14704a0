/*
 * May this product release run here now? Asks the Tessera agent daemon; Java 16+, no dependencies.
 *
 *   java TesseraCheck.java PRODUCT VERSION RELEASED [FEATURE]
 *
 * Speaks HTTP/1.0 over the daemon's AF_UNIX socket (TESSERA_AGENT_SOCKET, default
 * /run/tessera/agent.sock) with SocketChannel and UnixDomainSocketAddress. Prints the
 * answer's code on stdout. Exit codes: 0 entitled, 1 refused, 2 usage (or a question the
 * agent calls malformed), 3 agent unreachable.
 */

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.URLEncoder;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public final class TesseraCheck {
    static final int EXIT_ENTITLED = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3;
    static final String DEFAULT_SOCKET = "/run/tessera/agent.sock";
    static final Pattern STATUS = Pattern.compile("^HTTP/\\d\\.\\d (\\d{3}) ");
    // Codes are lowercase words and hyphens: no JSON library needed to pick one out.
    static final Pattern CODE = Pattern.compile("\"code\"\\s*:\\s*\"([a-z0-9-]+)\"");

    private TesseraCheck() {}

    static String field(String name, String value) {
        return name + "=" + URLEncoder.encode(value, StandardCharsets.UTF_8);
    }

    static String ask(String socketPath, String query) throws IOException {
        String request = "GET /v1/check?" + query + " HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        try (SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            channel.connect(UnixDomainSocketAddress.of(socketPath));
            ByteBuffer out = ByteBuffer.wrap(request.getBytes(StandardCharsets.US_ASCII));
            while (out.hasRemaining()) {
                channel.write(out);
            }
            // The answer ends where the stream does (read returns -1): with Connection: close
            // the daemon closes after one answer instead of keeping the connection alive.
            ByteArrayOutputStream answer = new ByteArrayOutputStream();
            ByteBuffer in = ByteBuffer.allocate(8192);
            while (channel.read(in) != -1) {
                answer.write(in.array(), 0, in.position());
                in.clear();
            }
            return answer.toString(StandardCharsets.UTF_8);
        }
    }

    static int check(String[] args) {
        if (args.length < 3 || args.length > 4 || args[0].isEmpty() || args[1].isEmpty() || args[2].isEmpty()) {
            System.err.println("usage: java TesseraCheck.java PRODUCT VERSION RELEASED(YYYY-MM-DD) [FEATURE]");
            return EXIT_USAGE;
        }
        String query = field("product", args[0]) + "&" + field("version", args[1]) + "&" + field("released", args[2]);
        if (args.length == 4) {
            query += "&" + field("feature", args[3]);
        }
        String socketPath = System.getenv("TESSERA_AGENT_SOCKET");
        if (socketPath == null || socketPath.isEmpty()) {
            socketPath = DEFAULT_SOCKET;
        }
        String answer;
        try {
            answer = ask(socketPath, query);
        } catch (IOException | RuntimeException e) {
            System.err.println("TesseraCheck: agent unreachable at " + socketPath + ": " + e);
            return EXIT_UNREACHABLE;
        }
        Matcher status = STATUS.matcher(answer);
        int split = answer.indexOf("\r\n\r\n");
        Matcher code = CODE.matcher(split < 0 ? "" : answer.substring(split));
        if (!status.find() || !code.find()) {
            System.err.println("TesseraCheck: the agent's answer is not one it gives");
            return EXIT_UNREACHABLE;
        }
        switch (status.group(1)) {
            case "200":
                if (code.group(1).equals("entitled")) {
                    System.out.println(code.group(1));
                    return EXIT_ENTITLED;
                }
                break;
            case "403":
                System.out.println(code.group(1));
                return EXIT_REFUSED;
            case "400":
                System.err.println("TesseraCheck: " + code.group(1) + ": the agent calls the question malformed");
                return EXIT_USAGE;
            default:
                break;
        }
        System.err.println("TesseraCheck: the agent answered HTTP " + status.group(1) + " (" + code.group(1) + ")");
        return EXIT_UNREACHABLE;
    }

    public static void main(String[] args) {
        System.exit(check(args));
    }
}
